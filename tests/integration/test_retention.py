"""Housekeeping's retention on a real Postgres: history past its period is pruned a bounded
batch at a time; recent rows, unpublished events and the latest reconcile run are kept."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from service.adapters.postgres import PostgresStore
from service.entrypoints.housekeeping import Retention, prune

RETENTION = Retention(
    idempotency_key_days=7,
    published_event_days=7,
    webhook_days=30,
    reconcile_finding_days=400,
    batch=2,
)


async def plant_history(connection: asyncpg.Connection) -> None:
    """Five of each kind past its retention, and the rows that must survive."""
    for age_days, published in [(8, True)] * 5 + [(1, True), (8, False), (30, False)]:
        await connection.execute(
            """
            INSERT INTO outbox (event_id, conference_id, sequence, topic, key, value,
                                created_at, published_at)
            VALUES ($1, $2, 1, 't', 'k', '{}', now() - make_interval(days => $3),
                    CASE WHEN $4 THEN now() - make_interval(days => $3) END)
            """,
            uuid.uuid4(),
            uuid.uuid4(),
            age_days,
            published,
        )
    for age_days in [31] * 5 + [29]:
        await connection.execute(
            "INSERT INTO provider_webhook (received_at, payload)"
            " VALUES (now() - make_interval(days => $1), '{}')",
            age_days,
        )
    for age_days, findings in [(401, 3), (401, 2), (10, 1)]:
        run_id = await connection.fetchval(
            "INSERT INTO reconcile_run (period_start, period_end, started_at)"
            " VALUES (now(), now(), now() - make_interval(days => $1)) RETURNING id",
            age_days,
        )
        for _ in range(findings):
            await connection.execute(
                "INSERT INTO reconcile_finding (run_id, kind) VALUES ($1, 'price_mismatch')",
                run_id,
            )


async def counts(connection: asyncpg.Connection) -> dict[str, int]:
    row = await connection.fetchrow(
        """
        SELECT (SELECT count(*) FROM outbox WHERE published_at IS NOT NULL) AS published,
               (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished,
               (SELECT count(*) FROM provider_webhook) AS webhooks,
               (SELECT count(*) FROM reconcile_finding) AS findings,
               (SELECT count(*) FROM reconcile_run) AS runs
        """
    )
    return dict(row)


async def test_one_call_removes_no_more_than_its_batch(
    store: PostgresStore, database_url: str
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await plant_history(connection)

        removed = [
            await store.prune_history("published_events", 7, 2),
            await store.prune_history("webhooks", 30, 2),
            await store.prune_history("reconcile_findings", 400, 2),
        ]

        assert removed == [2, 2, 2]
        assert await counts(connection) == {
            "published": 4,
            "unpublished": 2,
            "webhooks": 4,
            "findings": 4,
            "runs": 3,
        }
    finally:
        await connection.close()


async def test_housekeeping_prunes_everything_past_retention_and_keeps_the_rest(
    store: PostgresStore, database_url: str
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await plant_history(connection)

        pruned = await prune(store, RETENTION, asyncio.Event())

        assert pruned == {
            "idempotency_keys": 0,
            "published_events": 5,
            "webhooks": 5,
            "reconcile_findings": 5,
        }
        assert await counts(connection) == {
            "published": 1,  # a day old
            "unpublished": 2,  # never delivered: kept however old
            "webhooks": 1,
            "findings": 1,
            "runs": 1,  # the old runs went with their findings
        }
    finally:
        await connection.close()
