"""The command consumer: Kafka `conference.commands.v1` -> accepted conferences in Postgres.

An offset is committed only after Postgres has committed what its message caused, so a crash
anywhere means redelivery, and redelivery is harmless because acceptance is unique on the
command id and on caller + idempotency key. Messages that can never be accepted go to the DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from service import failpoints, metrics, tracing
from service.domain.commands import AddParticipantCommand, Command, field_errors, parse_command
from service.handlers import accept_command, accept_participant_command
from service.logging import get_logger
from service.ports import (
    CommandIdReused,
    CommandRefusedByStore,
    ConferenceStore,
    DeadLetters,
    ParticipantRefused,
)

log = get_logger(__name__)


T = TypeVar("T")

# Commands accepted at once; below the database pool's size, which the schedule loops share.
_CONCURRENT_ACCEPTS = 8
# How often the lag is read from the broker: by its own task, so a wedged batch cannot hide it.
LAG_INTERVAL_SECONDS = 5.0


async def _until_done(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Repeat until it works. A message is never skipped: while Postgres or the broker is away
    the partition waits (its offset is not committed), and the lag alert tells someone. A
    command the store refuses as data would wait forever, and every partition with it."""
    delay = 0.5
    while True:
        try:
            return await attempt()
        except (CommandRefusedByStore, ParticipantRefused):
            raise
        except Exception as error:
            log.warning(f"{what}_retrying", error=repr(error)[:300], delay=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class CommandConsumer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        dead_letters: DeadLetters,
        store: ConferenceStore,
        clock: Callable[[], datetime],
        callers: Collection[str],
        lag_interval: float = LAG_INTERVAL_SECONDS,
        on_accepted: Callable[[], None] = lambda: None,
        default_max_duration: int = 4 * 3600,
        group: str = "",
    ) -> None:
        self._consumer = consumer
        self._dead_letters = dead_letters
        self._store = store
        self._clock = clock
        # Tells the dialer a conference is waiting: it claims at once instead of at its next look.
        self._on_accepted = on_accepted
        # The api's callers (API_TOKENS): a command for any other name could be seen or
        # canceled by no one, so it is not carried out.
        self._callers = frozenset(callers)
        self._lag_interval = lag_interval
        # An add produced straight to Kafka for a conference past this is dead-lettered.
        self._default_max_duration = default_max_duration
        self._lag_series: set[TopicPartition] = set()
        self._accepting = asyncio.Semaphore(_CONCURRENT_ACCEPTS)
        self._group = group

    async def run(self, stop: asyncio.Event) -> None:
        lag = asyncio.create_task(self._report_lag(stop))
        try:
            await self._consume(stop)
        finally:
            lag.cancel()

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=500, max_records=200)
            # A batch is accepted a few messages at a time, in any order: each command is its
            # own conference, and the offsets are committed only once all of them are stored.
            await asyncio.gather(
                *(self._handle_in_turn(r) for records in batch.values() for r in records)
            )
            if batch:
                try:
                    await self._consumer.commit()
                except KafkaError as error:
                    # A rebalance or a broker away: the next owner gets these again and
                    # acceptance drops what we already stored.
                    log.warning("command_commit_failed", error=repr(error)[:300])

    async def _report_lag(self, stop: asyncio.Event) -> None:
        """The group's lag per assigned partition, from the broker's end offsets and the
        group's committed offsets: what is not committed is not done, so a partition whose
        batch is stuck shows its lag rising. Read from the start, not only after a fetch."""
        while not stop.is_set():
            try:
                await self._observe_lag()
            except (KafkaError, OSError) as error:
                log.warning("consumer_lag_unavailable", error=repr(error)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._lag_interval)

    async def _observe_lag(self) -> None:
        assigned = set(self._consumer.assignment())
        for gone in self._lag_series - assigned:
            # Another worker owns it now and exports it; two series would add up to nonsense.
            metrics.CONSUMER_LAG.remove(gone.topic, str(gone.partition))
            metrics.CONSUMER_COMMITTED_OFFSET.remove(gone.topic, str(gone.partition))
        self._lag_series &= assigned
        if not assigned:
            return
        ends = await self._consumer.end_offsets(list(assigned))
        starts = await self._consumer.beginning_offsets(list(assigned))
        for partition in assigned:
            committed = await self._consumer.committed(partition)
            # Nothing committed yet: the group starts at the earliest offset still kept.
            done = starts.get(partition, 0) if committed is None else committed
            labels = (partition.topic, str(partition.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(max(ends.get(partition, 0) - done, 0))
            metrics.CONSUMER_COMMITTED_OFFSET.labels(*labels).set(done)
            self._lag_series.add(partition)

    async def _handle_in_turn(self, record: ConsumerRecord) -> None:
        async with self._accepting:
            key = record.key.decode(errors="replace") if record.key else ""
            # A child of the api's producer span: the trace goes on from the caller's request,
            # and the conference keeps this span's context for its later steps.
            with tracing.processing(record.topic, key, record.headers, self._group):
                await self._handle(record)

    async def _handle(self, record: ConsumerRecord) -> None:
        try:
            command = parse_command(orjson.loads(record.value))
        except orjson.JSONDecodeError:
            await self._dead_letter(record, "not-json", "the value is not JSON")
            return
        except ValidationError as error:
            errors = "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(error))
            await self._dead_letter(record, "invalid-command", errors)
            return
        if command.caller not in self._callers:
            await self._dead_letter(
                record, "unknown-caller", f"caller {command.caller!r} is not a configured caller"
            )
            return
        try:
            accepted = await _until_done("command_accept", lambda: self._accept(command))
        except ParticipantRefused as refused:
            # Only an add produced straight to Kafka: one the api answered 202 for has its
            # position reserved, and is never refused here.
            await self._dead_letter(record, refused.reason.value, str(refused))
            return
        except CommandIdReused as reused:
            await self._dead_letter(record, "command-id-reused", str(reused))
            return
        except CommandRefusedByStore as refused:
            await self._dead_letter(record, "refused-by-store", str(refused))
            return
        failpoints.reached(
            "after_accept_participant"
            if isinstance(command, AddParticipantCommand)
            else "after_accept"
        )
        if accepted:
            self._on_accepted()
        metrics.COMMANDS_CONSUMED.labels(outcome="accepted" if accepted else "duplicate").inc()
        log.info(
            "command_consumed",
            type=command.type,
            conference_id=str(command.conference_id),
            caller=command.caller,
            duplicate=not accepted,
        )

    async def _accept(self, command: Command) -> bool:
        if isinstance(command, AddParticipantCommand):
            return await accept_participant_command(
                self._store, command, self._clock(), self._default_max_duration
            )
        return await accept_command(self._store, command, self._clock())

    async def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        # The message's own headers (CloudEvents, traceparent) go with it.
        headers = [
            *(record.headers or ()),
            ("dlq.reason", reason.encode()),
            ("dlq.detail", detail[:1000].encode()),
            ("dlq.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        await _until_done(
            "command_dead_letter",
            lambda: self._dead_letters.send(record.value, record.key, headers),
        )
        metrics.COMMANDS_CONSUMED.labels(outcome="dead_lettered").inc()
        log.warning(
            "command_dead_lettered",
            reason=reason,
            partition=record.partition,
            offset=record.offset,
        )
