"""`python -m service events`: a person on call reads the events topic and the DLQ, one line a
message, from the real broker, without moving anybody's offsets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.conftest import ROOT, Base, free_port
from tests.waiting import eventually

pytestmark = pytest.mark.stack

EVENT_SCHEMA = json.loads((ROOT / "schemas" / "conference.events.v1.json").read_text())
A = str(uuid.uuid4())
B = str(uuid.uuid4())
COMMANDS_TOPIC = "conference.commands.v1"


@dataclass
class Topics:
    kafka: str
    events: str
    dlq: str

    def env(self, **overrides: str) -> dict[str, str]:
        kept = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        return {
            **kept,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "KAFKA_EVENTS_TOPIC": self.events,
            "KAFKA_DLQ_TOPIC": self.dlq,
            "LOG_FORMAT": "json",
            **overrides,
        }

    async def produce(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers)
        finally:
            await producer.stop()


def participant(
    number: str, status: str | None, billed: int | None, price: str | None, dial_state: str
) -> dict[str, Any]:
    return {
        "number": number,
        "provider_call_id": "7001" if dial_state == "dialed" else None,
        "status": status,
        "dial_state": dial_state,
        "started_at": "2026-12-02T15:00:02-03:00" if billed is not None else None,
        "duration_seconds": billed,
        "billed_seconds": billed,
        "talk_seconds": billed,
        "price": price,
        "currency": "BRL",
        "recording_url": None,
        "rejection_reason": None,
    }


def event(conference: str, sequence: int, kind: str, at: str, data: dict[str, Any]) -> bytes:
    """An event as the relay publishes it, held to the topic's schema."""
    value = {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "occurred_at": at,
        "conference_id": conference,
        "sequence": sequence,
        "caller": "billing-tests",
        "reference": "ticket-42",
        "metadata": {},
        "data": data,
    }
    jsonschema.validate(value, EVENT_SCHEMA, format_checker=jsonschema.FormatChecker())
    return orjson.dumps(value)


def final(
    status: str, reason: str | None, calls: list[dict[str, Any]], total: tuple[int, str]
) -> dict[str, Any]:
    return {
        "status": status,
        "provider_conference_id": "5001" if status == "completed" else None,
        "failure_reason": reason,
        "participants": calls,
        "totals": {"billed_seconds": total[0], "price": total[1], "currency": "BRL"},
    }


ANSWERED = participant("+554832830151", "atendida", 42, "0.1200", "dialed")
BUSY = participant("+554899990000", "ocupado", 0, "0.0000", "dialed")
RINGING = participant("+554832830151", "chamando", None, None, "dialed")
NEVER_DIALED = participant("+554833334444", None, None, None, "pending")

# Two conferences, each in its key's partition, with a value that is not JSON and one that is
# JSON but not an event among them.
MESSAGES: list[tuple[str, bytes]] = [
    (A, event(A, 1, "conference.accepted", "2026-12-02T15:00:00-03:00", {
        "command_id": str(uuid.uuid4()),
        "requested_at": "2026-12-02T17:59:59+00:00",
        "participants": ["+554832830151", "+554899990000"],
    })),
    (B, event(B, 1, "conference.accepted", "2026-12-02T18:00:00.5+00:00", {
        "command_id": str(uuid.uuid4()),
        "requested_at": "2026-12-02T18:00:00+00:00",
        "participants": ["+554833334444"],
    })),
    (A, event(A, 2, "participant.status_changed", "2026-12-02T18:00:03+00:00", {
        "participant": RINGING,
    })),
    (A, b"\x1b[31mnot json\nat all"),
    (A, event(A, 3, "conference.completed", "2026-12-02T18:01:00+00:00",
              final("completed", None, [ANSWERED, BUSY], (42, "0.1200")))),
    (B, b'{"hello": "world"}'),
    (B, event(B, 2, "conference.unresolved", "2026-12-02T23:00:00+00:00",
              final("unresolved", "the provider never created the conference", [NEVER_DIALED],
                    (0, "0.0000")))),
]  # fmt: skip

A_LINES = [
    f"2026-12-02T18:00:00Z  conference.accepted         {A}  #1  "
    "participants +554832830151, +554899990000",
    f"2026-12-02T18:00:03Z  participant.status_changed  {A}  #2  +554832830151 chamando",
    "not JSON: \\x1b[31mnot json\\nat all",
    f"2026-12-02T18:01:00Z  conference.completed        {A}  #3  "
    "+554832830151 atendida 42s 0.1200; +554899990000 ocupado 0s 0.0000; total 42s 0.1200 BRL",
]
B_LINES = [
    f"2026-12-02T18:00:00Z  conference.accepted         {B}  #1  participants +554833334444",
    'not an event: {"hello":"world"}',
    f"2026-12-02T23:00:00Z  conference.unresolved       {B}  #2  "
    "reason: the provider never created the conference; +554833334444 pending; "
    "total 0s 0.0000 BRL",
]


@pytest.fixture
async def topics(base: Base) -> AsyncIterator[Topics]:
    """A fresh events topic (3 partitions, like the real one) holding MESSAGES, and a DLQ."""
    run = uuid.uuid4().hex[:8]
    made = Topics(base.kafka, f"conference.events.watch-{run}", f"conference.dlq.watch-{run}")
    admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=3, replication_factor=1) for t in (made.events, made.dlq)]
        )
        try:
            for key, value in MESSAGES:
                await made.produce(made.events, key, value)
            yield made
        finally:
            await admin.delete_topics([made.events, made.dlq])
    finally:
        await admin.close()


async def events_command(
    env: dict[str, str], *args: str, timeout: float = 60
) -> tuple[int, str, str]:
    """Run `python -m service events ARGS` to its end; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "events", *args,
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"`events {' '.join(args)}` did not end within {timeout}s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def of(lines: list[str], conference: str, key_lines: int) -> list[str]:
    """`conference`'s lines, in order; those that name it only by key (non-events) trimmed to
    what follows the key."""
    mine = []
    for line in lines:
        if f"  {conference}  " in line:
            mine.append(line)
        elif f"key {conference}  " in line:
            mine.append(line.split(f"key {conference}  ", 1)[1])
    assert sum(1 for line in mine if not line.startswith("2026")) == key_lines
    return mine


async def test_prints_every_event_up_to_the_end_and_exits(topics: Topics) -> None:
    code, out, err = await events_command(topics.env())
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(MESSAGES), out
    assert of(lines, A, key_lines=1) == A_LINES
    assert of(lines, B, key_lines=1) == B_LINES
    assert "Traceback" not in err


async def test_conference_filter_prints_only_that_conference(topics: Topics) -> None:
    code, out, err = await events_command(topics.env(), "--conference", B.upper())
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(B_LINES) and of(lines, B, key_lines=1) == B_LINES, out


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
async def test_follow_prints_new_messages_until_signalled(
    topics: Topics, stop_with: signal.Signals
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "events", "--follow", "--conference", A,
        cwd=ROOT, env=topics.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode().rstrip("\n"))

    reader = asyncio.ensure_future(read())
    try:
        await eventually(
            lambda: _true(len(lines) == len(A_LINES)), 60, "A's events so far", interval=0.05
        )
        await topics.produce(topics.events, A, reconciled(A, 4))
        await topics.produce(topics.events, B, reconciled(B, 3))  # not A's: never shown
        expected = (
            f"2026-12-03T09:00:00Z  conference.reconciled       {A}  #4  "
            "run 7: +554832830151 price 0.1200 -> 0.1500"
        )
        await eventually(lambda: _true(expected in lines), 30, "the event produced while following")
        process.send_signal(stop_with)
        code = await asyncio.wait_for(process.wait(), 15)
        err = (await process.stderr.read()).decode()
        assert code == 0 and err == "", err  # quietly: no traceback, no log line
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.wait_for(reader, 5)
    assert of(lines, A, key_lines=1) == [*A_LINES, expected]
    assert len(lines) == len(A_LINES) + 1


async def _true(value: bool) -> bool:
    return value


def reconciled(conference: str, sequence: int) -> bytes:
    adjustment = {
        "provider_call_id": "7001",
        "number": "+554832830151",
        "field": "price",
        "ordinal": 1,
        "before": "0.1200",
        "after": "0.1500",
    }
    data = {
        "kind": "adjustment",
        "run_id": 7,
        "source": "relatorio",
        "adjustment": adjustment,
        "billing": final("completed", None, [ANSWERED, BUSY], (42, "0.1500")),
    }
    return event(conference, sequence, "conference.reconciled", "2026-12-03T09:00:00+00:00", data)


async def test_dlq_prints_each_dead_letters_reason_detail_source_key_and_value(
    topics: Topics,
) -> None:
    poison = orjson.dumps({"type": "conference.create", "conference_id": A, "pad": "x" * 1000})
    headers = [
        ("dlq.reason", b"invalid-command"),
        ("dlq.detail", b"payload.participants: Field required"),
        ("dlq.source", f"{COMMANDS_TOPIC}/2/17".encode()),
    ]
    await topics.produce(topics.dlq, A, poison, headers)
    await topics.produce(topics.dlq, B, b"{}", [("dlq.reason", b"refused-by-store")])
    code, out, err = await events_command(topics.env(), "--dlq")
    assert code == 0, err
    first, second = sorted(out.splitlines(), key=lambda line: A not in line)
    assert "  dead letter  invalid-command  " in first
    assert f"source {COMMANDS_TOPIC}/2/17  key {A}  " in first
    assert "detail: payload.participants: Field required  " in first
    value = first.split("  value: ", 1)[1]
    assert value.startswith('{"type":"conference.create"') and value.endswith("…")
    assert len(value) <= 300
    assert f"refused-by-store  source ?  key {B}  detail:   value: {{}}" in second

    code, out, err = await events_command(topics.env(), "--dlq", "--conference", B)
    assert code == 0 and out.count("dead letter") == 1 and f"key {B}" in out, (out, err)


async def test_an_unreachable_broker_is_one_line_and_exit_2() -> None:
    closed = f"127.0.0.1:{free_port()}"  # bound a moment ago, now nobody listens there
    started = time.monotonic()
    code, out, err = await events_command(Topics(closed, "e", "d").env(), timeout=30)
    assert code == 2 and out == "", (out, err)
    assert err.splitlines() == [err.strip()], err
    assert err.startswith(f"events: Kafka at {closed} is unreachable"), err
    assert time.monotonic() - started < 25


async def test_a_missing_topic_is_one_line_and_exit_2(base: Base) -> None:
    missing = f"conference.events.watch-missing-{uuid.uuid4().hex[:8]}"
    code, out, err = await events_command(Topics(base.kafka, missing, "d").env())
    assert code == 2 and out == "", (out, err)
    assert err == f"events: topic '{missing}' does not exist on {base.kafka}\n"
