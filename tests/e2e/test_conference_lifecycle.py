"""The reconciliation engine end to end: many conferences with every outcome, cancellation,
the exact ledger, contiguous events, and poll economy with and without webhooks."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import Base, Lane, open_lane
from tests.e2e.helpers import create_conferences, ledger, validate_events, wait_final
from tests.e2e.topics import events_by_conference
from tests.waiting import eventually

# The last two digits of a number choose what the simulated callee does.
OUTCOMES = {
    "01": ("atendida", 45),
    "02": ("ocupado", 0),
    "03": ("sem resposta", 0),
    "04": ("congestionado", 0),
    "05": ("falha", 0),
    "06": ("não existe", 0),
    "07": ("atendida", 290),
    "08": ("atendida", 130),
    "09": ("atendida", 3000),  # long: the conference that is deleted while it runs
}
SCENARIO = {
    # At a time scale of 30 a busy line hangs up 0.2 s after it is dialed, and a provider that
    # closes an empty room could close it before a loaded worker dials the next participant;
    # here the service ends each conference itself, as it does when the provider does not.
    "auto_end_conference": False,
    "rules": [
        {"match": f"{suffix}$", "status": status, "ring_seconds": 5, "talk_seconds": talk}
        for suffix, (status, talk) in OUTCOMES.items()
    ],
}
# 11 digits whose subscriber part does not start with 9: valid to us, refused by the provider.
REFUSED_NUMBER = "48123456789"
FINAL_EVENT = {
    "completed": "conference.completed",
    "failed": "conference.failed",
    "canceled": "conference.canceled",
}


def number(index: int, suffix: str) -> str:
    return f"4832{index:04d}{suffix}"


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
    db = busy_db
    regular = ["01", "02", "03", "04", "05", "06", "07", "08"]
    bodies: list[dict[str, Any]] = [
        {
            "participants": [
                {"number": number(i, regular[i % 8])},
                {"number": number(i, regular[(i + 3) % 8])},
            ],
            "reference": f"batch-{i}",
        }
        for i in range(198)
    ]
    bodies.append({"participants": [{"number": REFUSED_NUMBER}], "reference": "refused"})
    bodies.append({"participants": [{"number": number(9999, "09")}], "reference": "deleted"})
    async with busy_lane.api() as api, busy_lane.simulator() as sim:
        ids = await create_conferences(api, bodies)
        deleted = ids[-1]

        async def running() -> bool:
            view = (await api.get(f"/v1/conferences/{deleted}")).json()
            return (
                view["status"] == "in_progress" and view["participants"][0]["status"] == "atendida"
            )

        await eventually(running, 60, "the long conference to be talking")
        cancel = await api.delete(f"/v1/conferences/{deleted}")
        assert cancel.status_code == 202

        rows = await wait_final(db, ids, timeout=180)
        provider = await ledger(sim)

    expected = {i: "completed" for i in ids}
    expected[ids[-2]] = "failed"
    expected[deleted] = "canceled"
    assert {i: r["status"] for i, r in rows.items()} == expected

    # Nobody was dialed twice, and everyone was dialed but the number the provider refused.
    ours = {r["provider_conference_id"] for r in rows.values()}
    dials = [d for d in provider["dials"] if str(d["conference_id"]) in ours]
    assert dials and all(d["count"] == 1 for d in dials)
    assert len(dials) == 2 * 198 + 1

    # The billing view holds every provider call, with the provider's exact figures.
    provider_calls = {
        str(call["id"]): call
        for conference in provider["conferences"]
        if str(conference["id"]) in ours
        for call in conference["calls"]
    }
    billing = await db.fetch(
        "SELECT * FROM billing_conference_call WHERE conference_id = ANY($1)",
        [uuid.UUID(i) for i in ids],
    )
    assert {r["provider_call_id"] for r in billing} == set(provider_calls)
    for row in billing:
        call = provider_calls[row["provider_call_id"]]
        assert (row["provider_status"], row["billed_seconds"], row["talk_seconds"]) == (
            call["status"],
            call["billed_seconds"],
            call["talk_seconds"],
        )
        assert row["duration_seconds"] == call["duration_seconds"]
        assert row["price"] == Decimal(call["price"]), row
        if row["number"] != "+55" + REFUSED_NUMBER and row["number"][-2:] != "09":
            assert row["provider_status"] == OUTCOMES[row["number"][-2:]][0]
    total = sum((Decimal(c["price"]) for c in provider_calls.values()), Decimal(0))
    assert sum((r["price"] for r in billing), Decimal(0)) == total
    canceled_call = next(r for r in billing if r["conference_id"] == uuid.UUID(deleted))
    assert 0 < canceled_call["talk_seconds"] < 3000

    # Every conference's events: from accepted to its final event, sequence 1, 2, 3…
    events = await events_by_conference(busy_lane, set(ids), timeout=60)
    for conference_id, status in expected.items():
        stream = events[conference_id]
        assert [e["sequence"] for e in stream] == list(range(1, len(stream) + 1)), stream
        assert stream[0]["type"] == "conference.accepted"
        assert stream[-1]["type"] == FINAL_EVENT[status]
        assert len({e["event_id"] for e in stream}) == len(stream)
        validate_events(stream)


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
