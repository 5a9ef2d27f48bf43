"""The command consumer: Kafka `conference.commands.v1` -> accepted conferences in Postgres.

An offset is committed only after Postgres has committed what its message caused, so a crash
anywhere means redelivery, and redelivery is harmless because acceptance is unique on the
command id and on caller + idempotency key. Messages that can never be accepted go to the DLQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from service import failpoints, metrics
from service.domain.commands import ConferenceCommand, field_errors
from service.handlers import accept_command
from service.logging import get_logger
from service.ports import CommandRefusedByStore, ConferenceStore, DeadLetters

log = get_logger(__name__)


T = TypeVar("T")

# Commands accepted at once; below the database pool's size, which the schedule loops share.
_CONCURRENT_ACCEPTS = 8


async def _until_done(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Repeat until it works. A message is never skipped: while Postgres or the broker is away
    the partition waits (its offset is not committed), and the lag alert tells someone. A
    command the store refuses as data would wait forever, and every partition with it."""
    delay = 0.5
    while True:
        try:
            return await attempt()
        except CommandRefusedByStore:
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
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self._consumer = consumer
        self._dead_letters = dead_letters
        self._store = store
        self._clock = clock
        # Tells the dialer a conference is waiting: it claims at once instead of at its next look.
        self._on_accepted = on_accepted
        self._next_offsets: dict[TopicPartition, int] = {}
        self._accepting = asyncio.Semaphore(_CONCURRENT_ACCEPTS)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=500, max_records=200)
            # A batch is accepted a few messages at a time, in any order: each command is its
            # own conference, and the offsets are committed only once all of them are stored.
            await asyncio.gather(
                *(self._handle_in_turn(r) for records in batch.values() for r in records)
            )
            for partition, records in batch.items():
                if records:
                    self._next_offsets[partition] = records[-1].offset + 1
            self._observe_lag()
            if batch:
                try:
                    await self._consumer.commit()
                except KafkaError as error:
                    # A rebalance or a broker away: the next owner gets these again and
                    # acceptance drops what we already stored.
                    log.warning("command_commit_failed", error=repr(error)[:300])

    def _observe_lag(self) -> None:
        """Messages behind the end of each partition, from the last fetch's high watermark."""
        for partition in self._consumer.assignment():
            highwater = self._consumer.highwater(partition)
            if highwater is None:
                continue
            position = self._next_offsets.get(partition, highwater)
            metrics.CONSUMER_LAG.labels(partition.topic, str(partition.partition)).set(
                max(highwater - position, 0)
            )

    async def _handle_in_turn(self, record: ConsumerRecord) -> None:
        async with self._accepting:
            await self._handle(record)

    async def _handle(self, record: ConsumerRecord) -> None:
        try:
            command = ConferenceCommand.model_validate(orjson.loads(record.value))
        except orjson.JSONDecodeError:
            await self._dead_letter(record, "not-json", "the value is not JSON")
            return
        except ValidationError as error:
            errors = "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(error))
            await self._dead_letter(record, "invalid-command", errors)
            return
        try:
            accepted = await _until_done(
                "command_accept", lambda: accept_command(self._store, command, self._clock())
            )
        except CommandRefusedByStore as refused:
            await self._dead_letter(record, "refused-by-store", str(refused))
            return
        failpoints.reached("after_accept")
        if accepted:
            self._on_accepted()
        metrics.COMMANDS_CONSUMED.labels(outcome="accepted" if accepted else "duplicate").inc()
        log.info(
            "command_consumed",
            conference_id=str(command.conference_id),
            caller=command.caller,
            duplicate=not accepted,
        )

    async def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        headers = [
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
