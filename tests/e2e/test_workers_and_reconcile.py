"""Several workers sharing one schedule, and `reconcile` finding and fixing what the provider's
report says differently."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.e2e.conftest import ROOT, Base, Lane, open_lane
from tests.e2e.helpers import create_conferences, ledger, wait_final
from tests.e2e.topics import read_topic
from tests.waiting import eventually

SCENARIO = {
    "auto_end_conference": False,
    "rules": [
        {"match": "1$", "status": "atendida", "ring_seconds": 5, "talk_seconds": 100},
        {"match": "2$", "status": "ocupado", "ring_seconds": 5},
        {"match": "3$", "status": "atendida", "ring_seconds": 5, "talk_seconds": 200},
    ],
}


def bodies(count: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "participants": [
                {"number": f"4833{offset + i:05d}{1 + i % 3}"},
                {"number": f"4834{offset + i:05d}{1 + (i + 1) % 3}"},
            ]
        }
        for i in range(count)
    ]


async def test_two_workers_share_the_schedule_without_overlap_or_loss(base: Base) -> None:
    lane = await open_lane(base, time_scale=30, workers=2)
    try:
        async with lane.api() as api, lane.simulator() as sim:
            assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
            ids = await create_conferences(api, bodies(80))
            db = await lane.connect()
            rows = await wait_final(db, ids, timeout=120)
            await db.close()
            provider = await ledger(sim)
            requests = (await sim.get("/_simulator/requests", params={"limit": 10000})).json()
    finally:
        assert not await lane.close()

    assert all(r["status"] == "completed" for r in rows.values())
    ours = {r["provider_conference_id"] for r in rows.values()}
    dials = [d for d in provider["dials"] if str(d["conference_id"]) in ours]
    assert len(dials) == 160 and all(d["count"] == 1 for d in dials)

    # Every request about one conference, in arrival order: each must have been answered before
    # the next one arrived, or two workers were at it at once.
    by_conference: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in requests:
        if request["conference_id"] is not None and str(request["conference_id"]) in ours:
            by_conference[str(request["conference_id"])].append(request)
    workers_seen = set()
    overlaps = []
    for conference_id, seen in by_conference.items():
        polls = sorted((r for r in seen if r["method"] == "GET"), key=lambda r: r["received_at"])
        workers_seen |= {r["user_agent"] for r in polls}
        for earlier, later in itertools.pairwise(polls):
            if (
                later["received_at"] < earlier["at"]
                and later["user_agent"] != earlier["user_agent"]
            ):
                overlaps.append((conference_id, earlier, later))
    print(
        f"\ntwo workers: {sum(len(v) for v in by_conference.values())} provider requests for "
        f"{len(ours)} conferences, from {len(workers_seen)} workers, {len(overlaps)} overlaps"
    )
    assert not overlaps
    assert len(workers_seen) == 2, "both workers polled"


def reconcile(lane: Lane) -> subprocess.CompletedProcess[str]:
    today = date.today()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "reconcile",
            "--from",
            (today - timedelta(days=1)).isoformat(),
            "--to",
            (today + timedelta(days=2)).isoformat(),
        ],
        cwd=ROOT,
        env={**os.environ, **lane.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_reconcile_finds_and_fixes_every_planted_discrepancy(base: Base) -> None:
    lane = await open_lane(base, time_scale=60)
    db = await lane.connect()
    try:
        async with lane.api() as api, lane.simulator() as sim:
            assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
            ids = await create_conferences(api, bodies(3, offset=500))
            rows = await wait_final(db, ids, timeout=60)

            clean = await asyncio.to_thread(reconcile, lane)
            assert clean.returncode == 0, clean.stdout + clean.stderr
            assert "0 discrepancies" in clean.stdout

            first, second = (rows[ids[0]], rows[ids[1]])
            [answered] = await db.fetch(
                "SELECT * FROM participant WHERE conference_id = $1 AND provider_status = 'atendida'"
                " ORDER BY position LIMIT 1",
                first["id"],
            )
            patched = await sim.patch(
                f"/_simulator/calls/{answered['provider_call_id']}", json={"price": "9.9900"}
            )
            assert patched.status_code == 200, patched.text
            added = await sim.post(
                f"/_simulator/conferences/{second['provider_conference_id']}/calls",
                json={"number": "4835000001", "status": "atendida", "talk_seconds": 61},
            )
            assert added.status_code == 201, added.text
            stranger = await sim.post(
                "/_simulator/conferences",
                json={
                    "calls": [{"number": "4836000001", "status": "atendida", "talk_seconds": 30}]
                },
            )
            assert stranger.status_code == 201, stranger.text
            provider = await ledger(sim)

        found = await asyncio.to_thread(reconcile, lane)
        assert found.returncode == 1, found.stdout + found.stderr
        kinds = {
            r["kind"]: r
            for r in await db.fetch(
                "SELECT * FROM reconcile_finding WHERE run_id = (SELECT max(id) FROM reconcile_run)"
            )
        }
        assert set(kinds) == {"price_mismatch", "missing_call", "unknown_conference"}

        calls = {
            str(c["id"]): c for conference in provider["conferences"] for c in conference["calls"]
        }
        billing = {
            r["provider_call_id"]: r
            for r in await db.fetch(
                "SELECT * FROM billing_conference_call WHERE conference_id = ANY($1)",
                [uuid.UUID(i) for i in ids],
            )
        }
        ours = {r["provider_conference_id"] for r in rows.values()}
        expected = {
            str(c["id"])
            for conference in provider["conferences"]
            if str(conference["id"]) in ours
            for c in conference["calls"]
        }
        assert set(billing) == expected, "every billed call of ours is in the ledger"
        for call_id, row in billing.items():
            assert row["price"] == Decimal(calls[call_id]["price"])
            assert row["billed_seconds"] == calls[call_id]["billed_seconds"]
        assert billing[answered["provider_call_id"]]["price"] == Decimal("9.9900")
        assert billing[answered["provider_call_id"]]["reconciled_at"] is not None

        again = await asyncio.to_thread(reconcile, lane)
        assert again.returncode == 1, "the conference we never created is still reported"
        latest = await db.fetch(
            "SELECT kind FROM reconcile_finding WHERE run_id = (SELECT max(id) FROM reconcile_run)"
        )
        assert [r["kind"] for r in latest] == ["unknown_conference"]

        reconciled = await read_topic(
            lane,
            lane.events_topic,
            lambda seen: sum(v["type"] == "conference.reconciled" for _, v in seen) >= 2,
        )
        corrected = sorted(
            v["conference_id"] for _, v in reconciled if v["type"] == "conference.reconciled"
        )
        assert corrected == sorted([ids[0], ids[1]]), "one correction event each, not repeated"
    finally:
        await db.close()
        assert not await lane.close()


async def test_reconcile_without_provider_exits_2(base: Base) -> None:
    lane = await open_lane(base, time_scale=60)
    try:
        env = {**lane.env, "TOTALVOICE_BASE_URL": "http://127.0.0.1:9"}
        today = datetime.now().date()
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "service",
                "reconcile",
                "--from",
                today.isoformat(),
                "--to",
                (today + timedelta(days=1)).isoformat(),
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        bad = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "service", "reconcile", "--from", "yesterday", "--to", "x"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and "ISO dates" in bad.stderr
    finally:
        assert not await lane.close()


async def test_workers_share_the_provider_budget(base: Base) -> None:
    budget = 12
    lane = await open_lane(base, time_scale=30, workers=2, TOTALVOICE_MAX_RPS=str(budget))
    db = await lane.connect()
    try:

        async def both_present() -> bool:
            return await db.fetchval("SELECT count(*) FROM worker_presence") == 2

        await eventually(both_present, 30, "both workers to announce themselves")
        await asyncio.sleep(2.5)  # one housekeeping round, so each has taken its share
        async with lane.api() as api, lane.simulator() as sim:
            assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
            ids = await create_conferences(api, bodies(30, offset=900))
            await wait_final(db, ids, timeout=120)
            requests = (await sim.get("/_simulator/requests", params={"limit": 10000})).json()
    finally:
        await db.close()
        assert not await lane.close()

    moments = sorted(
        datetime.fromisoformat(r["received_at"]).timestamp()
        for r in requests
        if r["endpoint"] != "unmatched"
    )
    window = 5.0
    busiest = max(
        sum(1 for m in moments[i:] if m < start + window) for i, start in enumerate(moments)
    )
    # Two workers, each with half the budget and a bucket of one second's worth of it; 10 % for
    # arrival-time jitter at the simulator. Without sharing they would reach twice the budget.
    ceiling = (budget * window + budget) * 1.1
    print(
        f"\nprovider budget {budget}/s across 2 workers: busiest {window:.0f}s window had "
        f"{busiest} requests (ceiling {ceiling:.0f}; {len(moments)} in all)"
    )
    assert budget * window * 0.6 <= busiest <= ceiling
