"""A burst under a tight provider budget drains at the budget's rate: no churn, no stall, nobody
dialed twice — with one worker, with several sharing the budget, and with a share per worker
below one request a second. Evidence comes from the simulator's own request log and ledger."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import Base, open_lane
from tests.e2e.helpers import create_conferences, ledger, wait_final
from tests.waiting import eventually

LEASE_SECONDS = 10
CONFERENCES = 60


@dataclass(frozen=True)
class Budget:
    requests_per_second: float
    workers: int

    @property
    def share(self) -> float:
        return self.requests_per_second / self.workers


BUDGETS = [
    Budget(6, 1),
    Budget(6, 3),
    # 0.8 requests a second each: a bucket that needs a whole token and holds only `rate` of
    # them never sends anything.
    Budget(2.4, 3),
]


def shares_logged(log: str) -> set[int]:
    """The worker counts a worker's log says it shared the budget between."""
    return {
        entry["workers"]
        for line in log.splitlines()
        if '"provider_budget_shared"' in line
        for entry in [json.loads(line)]
    }


def burst(count: int) -> list[dict[str, Any]]:
    """1 to 3 participants each; every number distinct across the burst."""
    return [
        {"participants": [{"number": f"48{3 + j}{i:07d}"} for j in range(1 + i % 3)]}
        for i in range(count)
    ]


@pytest.mark.parametrize(
    "budget", BUDGETS, ids=lambda b: f"{b.requests_per_second}rps-{b.workers}w"
)
async def test_a_burst_drains_at_the_budgets_rate_without_churn_or_double_dial(
    base: Base, budget: Budget
) -> None:
    lane = await open_lane(
        base,
        time_scale=60,
        workers=budget.workers,
        TOTALVOICE_MAX_RPS=str(budget.requests_per_second),
        CLAIM_LEASE_SECONDS=str(LEASE_SECONDS),
        WEBHOOKS_ENABLED="true",
    )
    db = await lane.connect()
    try:
        await lane.register_webhooks()

        async def all_present() -> bool:
            return await db.fetchval("SELECT count(*) FROM worker_presence") == budget.workers

        await eventually(all_present, 60, "every worker to announce itself")
        # The housekeeping round after every worker is present gives each its share.

        async def shares_taken() -> bool:
            workers = [p for p in lane.processes if p.name == "worker"]
            return all(budget.workers in shares_logged(w.log()) for w in workers)

        await eventually(shares_taken, 30, "each worker to take its share")
        bodies = burst(CONFERENCES)
        participants = sum(len(b["participants"]) for b in bodies)
        async with lane.api() as api, lane.simulator() as sim:
            # Rooms stay open until the service ends them: a dial that goes late to a room
            # whose first calls already hung up is still a dial.
            scenario = await sim.put("/_simulator/scenario", json={"auto_end_conference": False})
            assert scenario.status_code == 200, scenario.text
            started = time.monotonic()
            ids = await create_conferences(api, bodies)
            # Twice a generous estimate of the ideal (five requests a conference): a stall or a
            # livelock fails here instead of hanging.
            await wait_final(db, ids, timeout=2 * CONFERENCES * 5 / budget.requests_per_second)
            wall = time.monotonic() - started
            book = await ledger(sim)
        statuses = Counter(
            r["status"]
            for r in await db.fetch("SELECT status FROM conference WHERE id = ANY($1::uuid[])", ids)
        )
    finally:
        await db.close()
        unclean = await lane.close()
    assert not unclean, unclean

    requests = sum(
        count
        for endpoint, counts in book["requests"].items()
        if endpoint != "unmatched"
        for count in counts.values()
    )
    ideal = requests / budget.requests_per_second
    dials = [d["count"] for d in book["dials"]]
    logs = "".join(p.log() for p in lane.processes if p.name == "worker")
    resolutions = len(re.findall(r'"dial_resolved_as_(?:placed|not_placed)"', logs))
    print(
        f"\nbudget {budget.requests_per_second}/s over {budget.workers} worker(s) "
        f"(share {budget.share:.2f}/s), lease {LEASE_SECONDS}s: {CONFERENCES} conferences, "
        f"{participants} participants, {requests} provider requests "
        f"({dict(sorted(book['requests'].items()))}); all final in {wall:.1f}s against an ideal "
        f"of {ideal:.1f}s (ratio {wall / ideal:.2f}); dial resolutions per participant "
        f"{resolutions / participants:.3f}; dials per participant max {max(dials)}; "
        f"outcomes {dict(statuses)}"
    )
    # The burst needs at least three leases' time at this rate.
    assert ideal >= 3 * LEASE_SECONDS
    assert statuses == {"completed": CONFERENCES}
    assert len(dials) == participants and max(dials) == 1
    assert resolutions / participants <= 1.05
    assert wall <= 1.3 * ideal
