"""Opens what each process needs (pool, producers, provider client) in one place and closes it
in reverse order; the only wiring in the service."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from service import tracing
from service.adapters.kafka import (
    KafkaCommandPublisher,
    KafkaDeadLetters,
    KafkaMessagePublisher,
    RenewableProducer,
    new_consumer,
    new_producer,
    started,
)
from service.adapters.postgres import PostgresStore, open_pool
from service.adapters.totalvoice import TotalVoiceClient
from service.entrypoints.consumer import CommandConsumer
from service.entrypoints.housekeeping import Retention
from service.entrypoints.http import ApiDeps
from service.entrypoints.limits import ApiLimits
from service.handlers import ReconcileDeps, Timing, WorkerDeps
from service.logging import get_logger
from service.settings import (
    ApiSettings,
    CallerSettings,
    DatabaseSettings,
    EventsTopicSettings,
    KafkaSettings,
    ProviderSettings,
    WorkerSettings,
    load,
)

# A dependency restarting while we start (a rollout, a failover) is waited for this long
# before the process gives up and lets the orchestrator restart it.
STARTUP_PATIENCE_SECONDS = 60.0

T = TypeVar("T")
log = get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class DependencyUnavailable(OSError):
    """Postgres or Kafka did not answer within the startup patience."""


async def _patiently(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    deadline = time.monotonic() + STARTUP_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            return await attempt()
        except Exception as error:
            if time.monotonic() + delay > deadline:
                raise DependencyUnavailable(f"{what}: {error!r}"[:300]) from error
            log.warning("dependency_waited_for", dependency=what, error=repr(error)[:200])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _trace(stack: AsyncExitStack, role: str) -> None:
    """Tracing for this process, before anything it traces is opened; its last spans are
    flushed after everything is closed."""
    if tracing.configure(role):
        stack.callback(tracing.shutdown)


@asynccontextmanager
async def _store(stack: AsyncExitStack, kafka: KafkaSettings) -> AsyncIterator[PostgresStore]:
    database = load(DatabaseSettings)
    pool = await _patiently(
        "postgres",
        lambda: open_pool(
            database.database_url.get_secret_value(),
            database.database_pool_min,
            database.database_pool_max,
        ),
    )
    stack.push_async_callback(pool.close)
    yield PostgresStore(pool, kafka.kafka_events_topic, database.database_acquire_timeout_seconds)


@asynccontextmanager
async def api_deps() -> AsyncIterator[ApiDeps]:
    api = load(ApiSettings)
    kafka = load(KafkaSettings)
    async with AsyncExitStack() as stack:
        _trace(stack, "api")
        store = await stack.enter_async_context(_store(stack, kafka))
        producer = RenewableProducer(lambda: new_producer(kafka, client_id="conference-api"))
        await _patiently("kafka", producer.start)
        stack.push_async_callback(producer.stop)
        yield ApiDeps(
            ingress=store,
            conferences=store,
            webhooks=store,
            publisher=KafkaCommandPublisher(producer, kafka),
            tokens_by_caller=api.tokens_by_caller(),
            webhook_secret=api.webhook_secret.get_secret_value(),
            webhook_debounce_seconds=api.webhook_debounce_seconds,
            webhook_nudge_interval_seconds=api.webhook_nudge_interval_seconds,
            max_body_bytes=api.max_body_bytes,
            limits=ApiLimits.from_settings(api),
            clock=utc_now,
            default_max_duration_seconds=api.default_max_duration_seconds,
        )


def _provider_client(settings: ProviderSettings) -> TotalVoiceClient:
    return TotalVoiceClient.create(
        settings.totalvoice_base_url,
        settings.totalvoice_access_token.get_secret_value(),
        settings.totalvoice_max_rps,
        settings.totalvoice_connect_timeout_seconds,
        settings.totalvoice_read_timeout_seconds,
        by_urgency=settings.totalvoice_budget_order == "urgency",
    )


@asynccontextmanager
async def reconcile_deps() -> AsyncIterator[ReconcileDeps]:
    kafka_events_topic = load(EventsTopicSettings).kafka_events_topic
    provider_settings = load(ProviderSettings)
    async with AsyncExitStack() as stack:
        _trace(stack, "reconcile")
        database = load(DatabaseSettings)
        pool = await _patiently(
            "postgres", lambda: open_pool(database.database_url.get_secret_value(), 1, 2)
        )
        stack.push_async_callback(pool.close)
        provider = _provider_client(provider_settings)
        stack.push_async_callback(provider.aclose)
        store = PostgresStore(pool, kafka_events_topic, database.database_acquire_timeout_seconds)
        yield ReconcileDeps(store, provider, utc_now)


@dataclass
class WorkerParts:
    deps: WorkerDeps
    store: PostgresStore
    consumer: CommandConsumer | None
    events: KafkaMessagePublisher | None
    batch: int
    metrics_port: int
    retention: Retention
    share_budget: Callable[[int], None] | None
    # Set by the consumer when it accepts a command; the dialer claims at once.
    dial_wakeup: asyncio.Event


@asynccontextmanager
async def worker_parts(roles: set[str]) -> AsyncIterator[WorkerParts]:
    kafka = load(KafkaSettings)
    provider_settings = load(ProviderSettings)
    worker = load(WorkerSettings)
    # Only the names: the consumer accepts commands for the api's callers and no others.
    callers = load(CallerSettings).callers() if "dial" in roles else frozenset()
    async with AsyncExitStack() as stack:
        _trace(stack, "worker")
        store = await stack.enter_async_context(_store(stack, kafka))
        provider = _provider_client(provider_settings)
        stack.push_async_callback(provider.aclose)
        producer = None
        if roles & {"dial", "relay"}:
            producer = RenewableProducer(lambda: new_producer(kafka, client_id="conference-worker"))
            await _patiently("kafka", producer.start)
            stack.push_async_callback(producer.stop)
        consumer = None
        dial_wakeup = asyncio.Event()
        if "dial" in roles:
            assert producer is not None
            kafka_consumer = await _patiently(
                "kafka", lambda: started(new_consumer(kafka, kafka.kafka_commands_topic))
            )
            stack.push_async_callback(kafka_consumer.stop)
            consumer = CommandConsumer(
                kafka_consumer,
                KafkaDeadLetters(producer, kafka.kafka_dlq_topic),
                store,
                utc_now,
                callers=callers,
                on_accepted=dial_wakeup.set,
                default_max_duration=worker.default_max_duration_seconds,
                group=kafka.kafka_consumer_group,
            )
        deps = WorkerDeps(
            store=store,
            provider=provider,
            budget=provider.budget,
            timing=Timing(
                poll_first=worker.poll_first_seconds,
                poll_max=worker.poll_max_seconds,
                # An unknown dial is resolved only once its request can no longer be on its way.
                dial_grace=max(worker.dial_grace_seconds, provider.dial_deadline_seconds),
                lease=worker.claim_lease_seconds,
                settle_deadline=worker.settle_deadline_seconds,
                default_max_duration=worker.default_max_duration_seconds,
                webhooks=worker.webhooks_enabled,
                poll_safety=worker.poll_safety_seconds,
            ),
            clock=utc_now,
            random=random.random,
        )
        events = (
            KafkaMessagePublisher(producer, kafka.kafka_send_timeout_seconds)
            if producer is not None and "relay" in roles
            else None
        )
        yield WorkerParts(
            deps,
            store,
            consumer,
            events,
            worker.claim_batch,
            worker.metrics_port,
            Retention(
                idempotency_key_days=worker.idempotency_key_retention_days,
                published_event_days=worker.outbox_retention_days,
                webhook_days=worker.webhook_retention_days,
                reconcile_finding_days=worker.reconcile_finding_retention_days,
                batch=worker.prune_batch_rows,
            ),
            provider.budget.share if roles & {"dial", "poll"} else None,
            dial_wakeup,
        )
