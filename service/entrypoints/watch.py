"""`python -m service events`: the events topic (or the DLQ) as one readable line a message,
for a person on call.

It reads without a consumer group and commits nothing, so nobody's offsets move: every
partition is assigned and read from the beginning, up to the end offsets as they were at start,
or with `follow` until SIGINT/SIGTERM. Lines are written in the order read per partition (a
conference's events share a partition, by key) and flushed one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from service.settings import KafkaSettings

# Connecting and reading the topic's partitions: past this the broker counts as unreachable.
CONNECT_SECONDS = 15.0
# Values and details longer than this are cut (with "…"): a line stays a line.
TEXT_CHARS = 300
FINAL = {
    "conference.completed",
    "conference.failed",
    "conference.canceled",
    "conference.unresolved",
}


class BrokerUnavailable(Exception):
    """The broker did not answer, or has no such topic; the message is one line."""


@dataclass(frozen=True)
class WatchOptions:
    follow: bool = False
    conference: str | None = None
    dlq: bool = False


async def watch(settings: KafkaSettings, options: WatchOptions, out: TextIO) -> int:
    """Print the topic's messages; 0 at the end (or at SIGINT/SIGTERM with `follow`)."""
    topic = settings.kafka_dlq_topic if options.dlq else settings.kafka_events_topic
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    opening = asyncio.ensure_future(_open(settings, topic))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not opening.done():
        opening.cancel()  # interrupted while connecting: nothing to read, nothing to say
        with contextlib.suppress(asyncio.CancelledError, BrokerUnavailable):
            await opening
        return 0
    consumer, ends = opening.result()
    try:
        await _read(consumer, options, None if options.follow else ends, stop, out)
    finally:
        await consumer.stop()
    return 0


async def _open(
    settings: KafkaSettings, topic: str
) -> tuple[AIOKafkaConsumer, dict[TopicPartition, int]]:
    """A group-less consumer with every partition of `topic` assigned, at the beginning, and
    the partitions' end offsets as they are now."""
    consumer = AIOKafkaConsumer(
        **settings.client_options(),
        group_id=None,
        enable_auto_commit=False,
        client_id="conference-events-watch",
        auto_offset_reset="earliest",
    )
    where = settings.kafka_bootstrap_servers
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            with _quiet("aiokafka"):  # the failure is reported once, below, in one line
                await consumer.start()
            # A consumer keeps metadata only for the topics it was given; the cluster's own
            # list (what `consumer.topics()` asks for) never auto-creates a misspelt topic.
            cluster = await consumer._client.fetch_all_metadata()
            partitions = sorted(cluster.partitions_for_topic(topic) or ())
            if not partitions:
                raise BrokerUnavailable(f"topic {topic!r} does not exist on {where}")
            assigned = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await consumer.end_offsets(assigned)
    except BaseException as error:
        await consumer.stop()
        if isinstance(error, KafkaError | OSError | TimeoutError):
            raise BrokerUnavailable(f"Kafka at {where} is unreachable: {error!r}") from error
        raise
    return consumer, ends


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _read(
    consumer: AIOKafkaConsumer,
    options: WatchOptions,
    ends: dict[TopicPartition, int] | None,
    stop: asyncio.Event,
    out: TextIO,
) -> None:
    """Until `stop`, or until every partition has reached its end offset (when given)."""
    remaining = dict(ends) if ends is not None else None
    while not stop.is_set():
        if remaining is not None:
            for tp, end in list(remaining.items()):
                if await consumer.position(tp) >= end:
                    del remaining[tp]
            if not remaining:
                return
        batches = await consumer.getmany(timeout_ms=200)
        for tp in sorted(batches, key=lambda tp: tp.partition):
            for record in batches[tp]:
                if ends is not None and record.offset >= ends[tp]:
                    continue  # written after we started: not asked for without --follow
                if _wanted(record, options.conference):
                    line = dead_letter_line(record) if options.dlq else event_line(record)
                    out.write(_printable(line) + "\n")
                    out.flush()


def _wanted(record: ConsumerRecord[bytes, bytes], conference: str | None) -> bool:
    if conference is None or record.key == conference.encode():
        return True
    value = _json(record.value)
    return isinstance(value, dict) and value.get("conference_id") == conference


def event_line(record: ConsumerRecord[bytes, bytes]) -> str:
    """`when  type  conference  #sequence  summary`, or what the value is instead."""
    where = f"{record.topic}/{record.partition}@{record.offset}  key {_text(record.key)}"
    event = _json(record.value)
    if event is _NOT_JSON:
        return f"{where}  not JSON: {_short(_text(record.value))}"
    if not (
        isinstance(event, dict)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("conference_id"), str)
        and isinstance(event.get("data"), dict)
    ):
        return f"{where}  not an event: {_short(orjson.dumps(event).decode())}"
    try:
        summary = _summary(event["type"], event["data"])
    except (AttributeError, KeyError, TypeError):  # an event whose data is not as documented
        summary = _short(orjson.dumps(event["data"]).decode())
    when, kind, sequence = _utc(event.get("occurred_at")), event["type"], event.get("sequence")
    return f"{when}  {kind:<26}  {event['conference_id']}  #{sequence}  {summary}"


def dead_letter_line(record: ConsumerRecord[bytes, bytes]) -> str:
    headers = {name: _text(value) for name, value in record.headers}
    when = datetime.fromtimestamp(record.timestamp / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"{when}  dead letter  {headers.get('dlq.reason', '(no reason)')}"
        f"  source {headers.get('dlq.source', '?')}  key {_text(record.key)}"
        f"  detail: {_short(headers.get('dlq.detail', ''))}"
        f"  value: {_short(_text(record.value))}"
    )


def _summary(kind: str, data: dict[str, Any]) -> str:
    if kind in FINAL:
        totals = data["totals"]
        reason = f"reason: {data['failure_reason']}; " if data.get("failure_reason") else ""
        calls = "; ".join(_call(p) for p in data["participants"]) or "no participants"
        return f"{reason}{calls}; total {totals['billed_seconds']}s {totals['price']} BRL"
    if kind == "participant.status_changed":
        return _call(data["participant"])
    if kind == "participant.added":
        return f"position {data['position']} {data['number']}"
    if kind == "conference.accepted":
        return "participants " + ", ".join(map(str, data["participants"]))
    if kind == "conference.dialed":
        calls = "; ".join(_call(p) for p in data["participants"])
        return f"provider {data['provider_conference_id']}: {calls}"
    if kind == "conference.reconciled":
        return _reconciled(data)
    return _short(orjson.dumps(data).decode())


def _call(p: dict[str, Any]) -> str:
    """`+554832830151 atendida 42s 0.1200`: the provider's status, else our dial state."""
    text = f"{p['number']} {p.get('status') or p.get('dial_state') or '?'}"
    if p.get("billed_seconds") is not None or p.get("price") is not None:
        text += f" {p.get('billed_seconds') or 0}s {p.get('price') or '-'}"
    if p.get("rejection_reason"):
        text += f" ({p['rejection_reason']})"
    return text


def _reconciled(data: dict[str, Any]) -> str:
    run = f"run {data['run_id']}"
    if data["kind"] == "adjustment":
        a = data["adjustment"]
        return f"{run}: {a['number']} {a['field']} {a['before']} -> {a['after']}"
    return f"{run}: call added {_call(data['participant'])}"


_NOT_JSON = object()


def _json(value: bytes | None) -> Any:
    try:
        return orjson.loads(value) if value is not None else _NOT_JSON
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _utc(text: object) -> str:
    if text is None:
        return "?"
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if moment.tzinfo is None:
        return str(text)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: bytes | None) -> str:
    return "(none)" if value is None else value.decode("utf-8", "replace")


def _short(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def _printable(line: str) -> str:
    """Newlines and terminal escapes in a message are shown, not obeyed."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
