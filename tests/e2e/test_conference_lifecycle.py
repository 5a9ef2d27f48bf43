"""The reconciliation engine end to end: many conferences with every outcome, cancellation,
the exact ledger, contiguous events, and poll economy with and without webhooks."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.e2e.conftest import Base, Lane, open_lane
from tests.e2e.helpers import create_conferences, ledger, wait_final
from tests.e2e.lifecycle import check_lifecycle, number, outcome_rules, run_lifecycle

SCENARIO = {
    # At a time scale of 30 a busy line hangs up 0.2 s after it is dialed, and a provider that
    # closes an empty room could close it before a loaded worker dials the next participant;
    # here the service ends each conference itself, as it does when the provider does not.
    "auto_end_conference": False,
    "rules": outcome_rules(ring_seconds=5),
}


@pytest.fixture(scope="module")
async def busy_lane(base: Base) -> AsyncIterator[Lane]:
    lane = await open_lane(base, time_scale=30)
    async with lane.simulator() as sim:
        assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
    yield lane
    assert not await lane.close()


@pytest.fixture(scope="module")
async def busy_db(busy_lane: Lane) -> AsyncIterator[asyncpg.Connection]:
    connection = await busy_lane.connect()
    yield connection
    await connection.close()


async def test_two_hundred_conferences_end_right_with_exact_billing_and_contiguous_events(
    busy_lane: Lane, busy_db: asyncpg.Connection
) -> None:
    run = await run_lifecycle(busy_lane, busy_db, conferences=198)
    print(f"\n{run.summary('default dialect, 200 conferences')}")
    check_lifecycle(run)


async def _poll_counts(lane: Lane, talk_seconds: list[int]) -> list[int]:
    """Run one two-participant conference per talk time; GETs per conference at the provider."""
    scenario = {
        "rules": [
            {"match": f"{i:02d}$", "status": "atendida", "ring_seconds": 5, "talk_seconds": t}
            for i, t in enumerate(talk_seconds)
        ]
    }
    bodies = [
        {
            "participants": [
                {"number": number(i, f"{i:02d}")},
                {"number": number(i + 5000, f"{i:02d}")},
            ]
        }
        for i in range(len(talk_seconds))
    ]
    async with lane.api() as api, lane.simulator() as sim:
        assert (await sim.put("/_simulator/scenario", json=scenario)).status_code == 200
        ids = await create_conferences(api, bodies)
        db = await lane.connect()
        rows = await wait_final(db, ids, timeout=120)
        await db.close()
        gets = (await ledger(sim))["get_count_by_conference"]
    assert all(r["status"] == "completed" for r in rows.values())
    return [int(gets.get(r["provider_conference_id"], 0)) for r in rows.values()]


async def test_poll_economy_without_webhooks(base: Base) -> None:
    lane = await open_lane(base, time_scale=60)
    try:
        # Calls of up to five minutes of simulated time, spread evenly.
        counts = await _poll_counts(lane, [30 + 9 * i for i in range(30)])
    finally:
        assert not await lane.close()
    median = statistics.median(counts)
    print(
        f"\npoll economy, webhooks off: median {median} GET /conferencia/{{id}} per conference "
        f"(min {min(counts)}, max {max(counts)}, n={len(counts)})"
    )
    assert median <= 8


async def test_poll_economy_with_webhooks(base: Base) -> None:
    lane = await open_lane(
        base,
        time_scale=60,
        WEBHOOKS_ENABLED="true",
        WEBHOOK_DEBOUNCE_SECONDS="0.3",
        POLL_SAFETY_SECONDS=str(300 / 60),
    )
    try:
        await lane.register_webhooks()
        counts = await _poll_counts(lane, [30 + 7 * i for i in range(30)])
    finally:
        assert not await lane.close()
    median = statistics.median(counts)
    print(
        f"\npoll economy, webhooks on: median {median} GET /conferencia/{{id}} per conference "
        f"(min {min(counts)}, max {max(counts)}, n={len(counts)})"
    )
    assert median <= 2
