"""The phone rings first: at 90 % of what the provider budget can carry, every conference's
first dial reaches the provider within a second of its 202, and no poll waits past its cap.
Times come from the simulator's request log and the caller's own clock."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.e2e.conftest import Base, open_lane
from tests.e2e.helpers import create_conferences, ledger, wait_final

BUDGET = 20.0
TIME_SCALE = 60
POLL_MAX = 60 / TIME_SCALE
LOAD = 0.9
SECONDS = 20


def body(serial: int) -> dict[str, Any]:
    return {"participants": [{"number": f"4835{serial:06d}"}, {"number": f"4836{serial:06d}"}]}


async def _requests(sim: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await sim.get("/_simulator/requests", params={"limit": 10000})
    response.raise_for_status()
    return list(response.json())


def _provider_requests(book: dict[str, Any]) -> int:
    return sum(
        int(n)
        for endpoint, by in book["requests"].items()
        if endpoint != "unmatched"
        for n in by.values()
    )


async def test_at_ninety_percent_of_the_budget_every_dial_goes_within_a_second(
    base: Base,
) -> None:
    lane = await open_lane(base, time_scale=TIME_SCALE, TOTALVOICE_MAX_RPS=str(BUDGET))
    db = await lane.connect()
    try:
        async with lane.api() as api, lane.simulator() as sim:
            # What one conference costs the provider, measured on a first few.
            calibration = await create_conferences(api, [body(i) for i in range(10)])
            await wait_final(db, calibration, timeout=60)
            per_conference = _provider_requests(await ledger(sim)) / len(calibration)
            rate = LOAD * BUDGET / per_conference

            accepted: dict[str, datetime] = {}
            started = time.monotonic()

            async def post(serial: int) -> None:
                response = await api.post(
                    "/v1/conferences",
                    json=body(serial),
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
                assert response.status_code == 202, response.text
                accepted[response.json()["id"]] = datetime.now(UTC)

            posts = []
            for serial in range(100, 100 + int(rate * SECONDS)):
                # An open loop: each request leaves at its time, answered or not.
                delay = started + (serial - 100) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                posts.append(asyncio.create_task(post(serial)))
            await asyncio.gather(*posts)
            ids = list(accepted)
            await wait_final(db, ids, timeout=120)
            log = await _requests(sim)
            rows = await db.fetch(
                "SELECT id, provider_conference_id, accepted_at FROM conference"
                " WHERE id = ANY($1::uuid[])",
                ids,
            )
    finally:
        await db.close()
        assert not await lane.close()

    provider_id = {str(r["id"]): r["provider_conference_id"] for r in rows}
    # Where the wait goes: the Kafka hop to the worker's accept, then the dialer.
    hop = sorted((r["accepted_at"] - accepted[str(r["id"])]).total_seconds() for r in rows)
    first_dial: dict[str, datetime] = {}
    polls: dict[str, list[datetime]] = defaultdict(list)
    for request in log:
        conference = str(request["conference_id"])
        at = datetime.fromisoformat(request["received_at"])
        if request["endpoint"] == "POST /conferencia/{id}":
            first_dial.setdefault(conference, at)
        elif request["endpoint"] == "GET /conferencia/{id}":
            polls[conference].append(at)
    waits = sorted((first_dial[provider_id[c]] - accepted[c]).total_seconds() for c in ids)
    # Between two polls of a conference: at most its backoff (the cap, +20 % jitter), plus
    # the cap it may wait for its turn.
    gaps = [
        (b - a).total_seconds()
        for c in ids
        for a, b in zip(polls[provider_id[c]], polls[provider_id[c]][1:], strict=False)
    ]
    print(
        f"\nring first at {LOAD:.0%} of {BUDGET:.0f}/s ({per_conference:.1f} requests a "
        f"conference, {rate:.2f} conferences/s for {SECONDS}s, {len(ids)} conferences): "
        f"202 -> first dial p50 {waits[len(waits) // 2] * 1000:.0f} ms, "
        f"p99 {waits[int(len(waits) * 0.99)] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms; "
        f"(202 -> accepted p50 {hop[len(hop) // 2] * 1000:.0f} ms); "
        f"longest gap between polls {max(gaps, default=0):.2f}s (cap {POLL_MAX:.1f}s)"
    )
    assert waits[-1] <= 1.0
    assert max(gaps, default=0) <= POLL_MAX * 1.2 + POLL_MAX
