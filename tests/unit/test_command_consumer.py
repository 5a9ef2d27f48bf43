"""The command consumer on fakes: a command the store refuses as data, for a caller nobody
configured, or reusing another command's id is dead-lettered with its reason, once, and the
commands behind it are accepted; the lag is the group's, from the start, and rises while a
partition is stuck."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from service.domain.commands import ConferenceCommand
from service.entrypoints.consumer import CommandConsumer
from service.ports import CommandRefusedByStore
from tests.fakes import FakeClock, FakeConferenceStore
from tests.waiting import eventually

TOPIC = "conference.commands.v1"
CALLER = "billing"


class OnePartition:
    """Stands in for AIOKafkaConsumer (a library's client, not a port of ours): hands out the
    given records once, in order, and records commits."""

    def __init__(self, values: Sequence[bytes]) -> None:
        self.partition = TopicPartition(TOPIC, 0)
        self.pending = [
            ConsumerRecord(TOPIC, 0, offset, 0, 0, b"k", value, None, 1, len(value), [])
            for offset, value in enumerate(values)
        ]
        self.commits = 0
        self.end = len(values)
        self.committed_offset: int | None = None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if not self.pending:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch, self.pending = self.pending, []
        return {self.partition: batch}

    async def commit(self) -> None:
        self.commits += 1
        self.committed_offset = self.end

    def assignment(self) -> set[TopicPartition]:
        return {self.partition}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {p: self.end for p in partitions}

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {p: 0 for p in partitions}

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offset


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, bytes]]] = []

    async def send(self, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.sent.append((value, dict(headers)))


def wire(reference: str) -> dict[str, Any]:
    return {
        "type": "conference.create",
        "command_id": str(uuid.uuid4()),
        "conference_id": str(uuid.uuid4()),
        "caller": CALLER,
        "idempotency_key": uuid.uuid4().hex,
        "requested_at": "2026-11-26T12:00:00+00:00",
        "payload": {"participants": [{"number": "4832830151"}], "reference": reference},
    }


class RefusingStore(FakeConferenceStore):
    """Postgres refusing a value the model cannot know about (a column limit, say)."""

    async def accept(self, command: ConferenceCommand, event: Any) -> bool:
        if command.payload.reference == "too-much-for-the-column":
            raise CommandRefusedByStore("StringDataRightTruncationError: value too long")
        return await super().accept(command, event)


async def consume(values: Sequence[bytes], store: FakeConferenceStore) -> FakeDeadLetters:
    kafka = OnePartition(values)
    dead_letters = FakeDeadLetters()
    consumer = CommandConsumer(
        kafka,  # type: ignore[arg-type]
        dead_letters,
        store,
        FakeClock(),
        callers={CALLER},
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(lambda: _committed(kafka), 5, "the batch to be committed")
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
    return dead_letters


async def _committed(kafka: OnePartition) -> bool:
    return kafka.commits > 0


async def test_a_command_the_store_refuses_is_dead_lettered_and_the_next_is_accepted() -> None:
    store = RefusingStore(FakeClock())
    refused, behind = wire("too-much-for-the-column"), wire("fine")

    dead_letters = await consume([orjson.dumps(refused), orjson.dumps(behind)], store)

    [(value, headers)] = dead_letters.sent
    assert orjson.loads(value) == refused
    assert headers["dlq.reason"] == b"refused-by-store"
    assert b"StringDataRightTruncationError" in headers["dlq.detail"]
    assert headers["dlq.source"] == f"{TOPIC}/0/0".encode()
    assert list(store.rows) == [uuid.UUID(behind["conference_id"])]


async def test_a_nul_character_is_refused_by_the_model_before_the_store() -> None:
    store = FakeConferenceStore(FakeClock())
    poison, behind = wire("a\x00b"), wire("fine")

    dead_letters = await consume([orjson.dumps(poison), orjson.dumps(behind)], store)

    [(_, headers)] = dead_letters.sent
    assert headers["dlq.reason"] == b"invalid-command"
    assert headers["dlq.detail"] == b"payload.reference: must not contain NUL characters"
    assert list(store.rows) == [uuid.UUID(behind["conference_id"])]


async def test_a_command_for_a_caller_nobody_configured_is_dead_lettered() -> None:
    store = FakeConferenceStore(FakeClock())
    stranger, behind = {**wire("stranger"), "caller": "nobody-knows-me"}, wire("fine")

    dead_letters = await consume([orjson.dumps(stranger), orjson.dumps(behind)], store)

    [(value, headers)] = dead_letters.sent
    assert orjson.loads(value) == stranger
    assert headers["dlq.reason"] == b"unknown-caller"
    assert b"nobody-knows-me" in headers["dlq.detail"]
    assert list(store.rows) == [uuid.UUID(behind["conference_id"])]


async def test_a_command_reusing_a_command_id_with_another_conference_is_dead_lettered() -> None:
    store = FakeConferenceStore(FakeClock())
    first = wire("first")
    reused = {**wire("reused"), "command_id": first["command_id"]}

    dead_letters = await consume([orjson.dumps(first), orjson.dumps(reused)], store)

    [(value, headers)] = dead_letters.sent
    assert orjson.loads(value) == reused
    assert headers["dlq.reason"] == b"command-id-reused"
    assert list(store.rows) == [uuid.UUID(first["conference_id"])]
    assert store.keys == {(CALLER, first["idempotency_key"])}


class WedgedStore(FakeConferenceStore):
    """A store that never answers: the batch in hand stays in hand, its offsets uncommitted."""

    async def accept(self, command: ConferenceCommand, event: Any) -> bool:
        raise OSError("connection refused")


def lag() -> float | None:
    return REGISTRY.get_sample_value("conference_consumer_lag", {"topic": TOPIC, "partition": "0"})


async def test_the_lag_is_exported_from_the_start_and_rises_while_a_partition_is_stuck() -> None:
    kafka = OnePartition([orjson.dumps(wire("stuck")), orjson.dumps(wire("behind"))])
    consumer = CommandConsumer(
        kafka,  # type: ignore[arg-type]
        FakeDeadLetters(),
        WedgedStore(FakeClock()),
        FakeClock(),
        callers={CALLER},
        lag_interval=0.05,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(lambda: _is(lag, 2), 5, "the lag of the two waiting commands")
        kafka.end += 3  # three more commands produced while the partition is stuck
        await eventually(lambda: _is(lag, 5), 5, "the lag to rise")
        assert kafka.commits == 0
    finally:
        stop.set()
        running.cancel()


async def test_the_lag_is_zero_only_once_everything_is_committed() -> None:
    kafka = OnePartition([orjson.dumps(wire("one"))])
    consumer = CommandConsumer(
        kafka,  # type: ignore[arg-type]
        FakeDeadLetters(),
        FakeConferenceStore(FakeClock()),
        FakeClock(),
        callers={CALLER},
        lag_interval=0.05,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(lambda: _committed(kafka), 5, "the batch to be committed")
        await eventually(lambda: _is(lag, 0), 5, "the lag to be 0")
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)


async def _is(read: Any, expected: float) -> bool:
    return bool(read() == expected)
