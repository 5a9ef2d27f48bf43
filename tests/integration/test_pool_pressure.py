"""The pool under pressure: an exhausted pool fails an acquire within its timeout instead of
hanging, and the relay holds no transaction open while Kafka takes its time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import asyncpg
import pytest

from service.adapters.postgres import PostgresStore, open_pool
from service.entrypoints.relay import run_relay
from service.ports import OutboxMessage
from tests.waiting import eventually


async def test_an_acquire_on_an_exhausted_pool_fails_within_the_timeout(database_url: str) -> None:
    pool = await open_pool(database_url, min_size=1, max_size=1)
    store = PostgresStore(pool, "conference.events.v1", acquire_timeout=0.5)
    try:
        async with pool.acquire():  # the only connection, held
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.get("billing", uuid.uuid4()), 10)
            assert time.monotonic() - started < 2
    finally:
        await pool.close()


class BlockedPublisher:
    """Kafka that takes its time: publishes only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sending = asyncio.Event()
        self.published: list[OutboxMessage] = []

    async def publish_many(self, messages: Sequence[OutboxMessage]) -> None:
        self.sending.set()
        await self.release.wait()
        self.published.extend(messages)


async def test_the_relay_holds_no_transaction_open_while_it_publishes(
    store: PostgresStore, database_url: str
) -> None:
    connection = await asyncpg.connect(database_url)
    publisher = BlockedPublisher()
    stop = asyncio.Event()
    try:
        conference_id = uuid.uuid4()
        for sequence in (1, 2, 3):
            await connection.execute(
                "INSERT INTO outbox (event_id, conference_id, sequence, topic, key, value)"
                " VALUES ($1, $2, $3, 't', 'k', '{}')",
                uuid.uuid4(),
                conference_id,
                sequence,
            )
        relay = asyncio.create_task(run_relay(store, publisher, stop))
        await asyncio.wait_for(publisher.sending.wait(), 10)

        idle_in_transaction = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        publisher.release.set()

        async def all_published() -> bool:
            return not await connection.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )

        await eventually(all_published, 10, "the batch to be marked published")
        stop.set()
        await asyncio.wait_for(relay, 10)
    finally:
        publisher.release.set()
        stop.set()
        await connection.close()
    assert idle_in_transaction == 0
    assert [m.id for m in publisher.published] == sorted(m.id for m in publisher.published)
    assert len(publisher.published) == 3
