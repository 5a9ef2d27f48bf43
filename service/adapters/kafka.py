"""Kafka producers and consumers, configured once for local brokers and for real clusters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar
from uuid import UUID

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from service import tracing
from service.domain.cloudevents import command_headers, event_headers
from service.logging import get_logger
from service.ports import OutboxMessage
from service.settings import KafkaSettings

log = get_logger(__name__)


def new_producer(settings: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    # Idempotence (which implies acks=all) keeps broker retries from writing a message twice.
    return AIOKafkaProducer(
        **settings.client_options(),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        request_timeout_ms=int(settings.kafka_send_timeout_seconds * 1000),
    )


def new_consumer(settings: KafkaSettings, *topics: str) -> AIOKafkaConsumer:
    # Offsets are committed by hand, after Postgres has committed what the message caused.
    return AIOKafkaConsumer(
        *topics,
        **settings.client_options(),
        group_id=settings.kafka_consumer_group,
        client_id="conference-worker",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=200,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_session_timeout_ms // 3,
    )


class _Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Client)


async def started(client: ClientT) -> ClientT:
    """A Kafka client, started, or stopped again if it could not start: a failed start leaves a
    client unusable, so each attempt takes a fresh one."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


class RenewableProducer:
    """An idempotent producer that is replaced when it breaks.

    After a broker restart an idempotent producer can be left in a state it never leaves
    (OutOfOrderSequenceNumber on every send); a fresh one gets a new producer id and works.
    Whoever sees a send fail calls `renew`; the caller's own retry then uses the new producer.
    """

    def __init__(self, make: Callable[[], AIOKafkaProducer]) -> None:
        self._make = make
        self._lock = asyncio.Lock()
        self.current: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.current = await self._started()

    async def renew(self, broken: AIOKafkaProducer) -> None:
        stop_stale = broken.stop
        async with self._lock:
            if self.current is not broken:
                return  # someone else already replaced it
            log.warning("kafka_producer_renewed")
            try:
                self.current = await self._started()
            finally:
                with contextlib.suppress(Exception):
                    await stop_stale()

    async def stop(self) -> None:
        if self.current is not None:
            await self.current.stop()

    async def _started(self) -> AIOKafkaProducer:
        return await started(self._make())

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[AIOKafkaProducer]:
        """The producer for one send; renewed if the send fails for any reason but a timeout."""
        producer = self.current
        assert producer is not None, "start() first"
        try:
            yield producer
        except KafkaError:
            await self.renew(producer)
            raise


class KafkaCommandPublisher:
    def __init__(self, producer: RenewableProducer, settings: KafkaSettings) -> None:
        self._producer = producer
        self._topic = settings.kafka_commands_topic
        self._timeout = settings.kafka_send_timeout_seconds

    async def publish_command(self, conference_id: UUID, command: dict[str, Any]) -> None:
        key = str(conference_id)
        with tracing.sending(self._topic, key) as span:
            headers = command_headers(command) + tracing.trace_headers(span)
            async with asyncio.timeout(self._timeout), self._producer.use() as producer:
                await producer.send_and_wait(
                    self._topic, value=orjson.dumps(command), key=key.encode(), headers=headers
                )

    async def ping(self) -> None:
        async with asyncio.timeout(2), self._producer.use() as producer:
            await producer.client.fetch_all_metadata()


class KafkaMessagePublisher:
    def __init__(self, producer: RenewableProducer, timeout_seconds: float) -> None:
        self._producer = producer
        self._timeout = timeout_seconds

    async def publish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Events with their CloudEvents headers, each sent under a span of its own linked to the
        trace of its conference's command."""
        with contextlib.ExitStack() as spans:
            async with asyncio.timeout(self._timeout), self._producer.use() as producer:
                deliveries = []
                for m in messages:
                    span = spans.enter_context(
                        tracing.sending(m.topic, m.key, linked_to=m.trace_parent)
                    )
                    headers = event_headers(orjson.loads(m.value)) + tracing.trace_headers(span)
                    deliveries.append(
                        await producer.send(
                            m.topic, value=m.value, key=m.key.encode(), headers=headers
                        )
                    )
                await asyncio.gather(*deliveries)


class KafkaDeadLetters:
    def __init__(self, producer: RenewableProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        async with self._producer.use() as producer:
            await producer.send_and_wait(self._topic, value=value, key=key, headers=headers)
