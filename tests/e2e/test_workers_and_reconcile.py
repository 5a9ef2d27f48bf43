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

import orjson

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


FIELDS = ("price", "billed_seconds", "duration_seconds", "talk_seconds")
FINAL_TYPES = {
    "conference.completed",
    "conference.failed",
    "conference.canceled",
    "conference.unresolved",
}


def provider_value(call: dict[str, Any], name: str) -> Any:
    return Decimal(call["price"]) if name == "price" else call[name]


def rebuild_billing(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The billing rows as a consumer of the events topic alone rebuilds them: each finalized
    conference's calls from its final event, the calls reconcile added, then for each field the
    adjustment with the highest ordinal. Deduped on event_id."""
    unique = {e["event_id"]: e for e in events}.values()
    calls: dict[tuple[str, str], dict[str, Any]] = {}
    latest: dict[tuple[str, str, str], tuple[int, Any]] = {}
    finalized = set()
    for event in sorted(unique, key=lambda e: (e["conference_id"], e["sequence"])):
        conference, data = event["conference_id"], event["data"]
        if event["type"] in FINAL_TYPES:
            finalized.add(conference)
            for p in data["participants"]:
                if p["provider_call_id"] is not None:
                    calls.setdefault((conference, p["provider_call_id"]), dict(p))
        elif event["type"] == "conference.reconciled" and data["kind"] == "call_added":
            p = data["participant"]
            calls[(conference, p["provider_call_id"])] = dict(p)
        elif event["type"] == "conference.reconciled" and data["kind"] == "adjustment":
            a = data["adjustment"]
            key = (conference, a["provider_call_id"], a["field"])
            if key not in latest or latest[key][0] < a["ordinal"]:
                latest[key] = (a["ordinal"], a["after"])
    for (conference, call_id, name), (_, after) in latest.items():
        calls[(conference, call_id)][name] = after
    return {key: row for key, row in calls.items() if key[0] in finalized}


async def test_reconcile_finds_and_fixes_every_planted_discrepancy(base: Base) -> None:
    # Six-decimal tariffs: every price the ledger settles has six places.
    lane = await open_lane(base, time_scale=60, simulator_args=("--price-decimals", "6"))
    db = await lane.connect()
    try:
        async with lane.api() as api, lane.simulator() as sim:
            assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
            ids = await create_conferences(api, bodies(4, offset=500))
            rows = await wait_final(db, ids, timeout=60)

            clean = await asyncio.to_thread(reconcile, lane)
            assert clean.returncode == 0, clean.stdout + clean.stderr
            assert "0 discrepancies" in clean.stdout

            original = {
                r["provider_call_id"]: r
                for r in await db.fetch(
                    "SELECT * FROM participant WHERE provider_call_id IS NOT NULL"
                )
            }
            first_settled_prices = {r["price"] for r in original.values()}
            print(f"\nprices as first settled: {sorted(map(str, first_settled_prices))}")
            assert any(
                p.as_tuple().exponent == -6 and p % Decimal("0.00001") for p in first_settled_prices
            )

            def answered(conference: int, nth: int = 0) -> str:
                calls = sorted(
                    (
                        r
                        for r in original.values()
                        if r["conference_id"] == uuid.UUID(ids[conference])
                        and r["provider_status"] == "atendida"
                    ),
                    key=lambda r: r["position"],
                )
                return str(calls[nth]["provider_call_id"])

            planted = {
                answered(0): {"price": "9.9900"},
                answered(1): {"billed_seconds": 180},
                answered(2, 0): {"talk_seconds": 11},
                answered(2, 1): {"price": "0.123457"},
                answered(3): {"price": "0.1234567"},  # seven places: refused, never rounded
            }
            for call_id, correction in planted.items():
                patched = await sim.patch(f"/_simulator/calls/{call_id}", json=correction)
                assert patched.status_code == 200, patched.text
            added = await sim.post(
                f"/_simulator/conferences/{rows[ids[3]]['provider_conference_id']}/calls",
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
        print(found.stdout)
        assert found.returncode == 1, found.stdout + found.stderr
        assert "total BRL after" in found.stdout
        kinds = {
            r["kind"]
            for r in await db.fetch(
                "SELECT * FROM reconcile_finding WHERE run_id = (SELECT max(id) FROM reconcile_run)"
            )
        }
        assert kinds == {
            "price_mismatch",
            "duration_mismatch",
            "missing_call",
            "unknown_conference",
            "unstorable_price",
        }

        calls = {
            str(c["id"]): c for conference in provider["conferences"] for c in conference["calls"]
        }
        refused = answered(3)
        # What the provider's report says differently from the ledger, field by field.
        expected_adjustments = {
            (call_id, name)
            for call_id, row in original.items()
            if call_id != refused
            for name in FIELDS
            if provider_value(calls[call_id], name) != row[name]
        }
        assert {
            (answered(0), "price"),
            (answered(1), "billed_seconds"),
            (answered(2, 0), "talk_seconds"),
            (answered(2, 1), "price"),
        } <= expected_adjustments

        # The original values are all still in the ledger.
        after = {
            r["provider_call_id"]: r
            for r in await db.fetch("SELECT * FROM participant WHERE provider_call_id IS NOT NULL")
        }
        for call_id, row in original.items():
            assert [after[call_id][n] for n in FIELDS] == [row[n] for n in FIELDS]
        [found_call] = [r for r in after.values() if r["source"] == "reconcile"]

        adjustments = await db.fetch("SELECT * FROM billing_adjustment ORDER BY adjustment_id")
        assert sorted((a["provider_call_id"], a["field"]) for a in adjustments) == sorted(
            expected_adjustments
        ), "one adjustment per changed field"
        for a in adjustments:
            assert a["ordinal"] == 1 and a["run_id"] is not None and a["source"]
            assert a["before"] == str(original[a["provider_call_id"]][a["field"]]) or (
                a["field"] == "price"
                and Decimal(a["before"]) == original[a["provider_call_id"]]["price"]
            )

        billing = {
            r["provider_call_id"]: r
            for r in await db.fetch(
                "SELECT * FROM billing_conference_call WHERE conference_id = ANY($1)",
                [uuid.UUID(i) for i in ids],
            )
        }
        assert set(billing) == set(original) | {found_call["provider_call_id"]}
        for call_id, row in billing.items():
            source = (
                original[call_id]
                if call_id == refused
                else {n: provider_value(calls[call_id], n) for n in FIELDS}
            )
            assert [row[n] for n in FIELDS] == [source[n] for n in FIELDS], call_id
            changed = sum(1 for a in adjustments if a["provider_call_id"] == call_id)
            assert row["adjustments"] == changed
            assert (row["last_adjusted_at"] is not None) == (changed > 0)
        assert billing[answered(2, 1)]["price"] == Decimal("0.123457")
        assert billing[refused]["price"] == original[refused]["price"]
        assert billing[found_call["provider_call_id"]]["found_by_reconcile"]

        run = await db.fetchrow("SELECT * FROM reconcile_run ORDER BY id DESC LIMIT 1")
        summary = (
            orjson.loads(run["summary"]) if isinstance(run["summary"], str) else run["summary"]
        )
        by_field = {n: sum(1 for _, f in expected_adjustments if f == n) for n in FIELDS}
        assert summary["adjustments"] == by_field
        assert summary["missing_in_ledger"] == 1 and summary["foreign_conferences"] == 1
        assert summary["unstorable_prices"] == 1 and summary["conferences_compared"] == 4
        view_total = sum((r["price"] for r in billing.values()), Decimal(0))
        assert Decimal(summary["totals"]["after"]) == view_total
        assert "total BRL before" in run["report"]

        events_before_rerun = await db.fetchval("SELECT count(*) FROM outbox")
        again = await asyncio.to_thread(reconcile, lane)
        assert again.returncode == 1, "the foreign conference and the refused price remain"
        latest = await db.fetch(
            "SELECT kind FROM reconcile_finding WHERE run_id = (SELECT max(id) FROM reconcile_run)"
        )
        assert sorted(r["kind"] for r in latest) == ["unknown_conference", "unstorable_price"]
        assert await db.fetchval("SELECT count(*) FROM ledger_adjustment") == len(adjustments)
        assert await db.fetchval("SELECT count(*) FROM outbox") == events_before_rerun

        # Billing rebuilt from the events topic alone equals the view, to the centavo.
        reconciled_count = len(adjustments) + 1
        seen = await read_topic(
            lane,
            lane.events_topic,
            lambda seen: (
                sum(v["type"] == "conference.reconciled" for _, v in seen) >= reconciled_count
                and sum(v["type"] in FINAL_TYPES for _, v in seen) >= len(ids)
            ),
        )
        events = [v for _, v in seen]
        reconciled = [e for e in events if e["type"] == "conference.reconciled"]
        assert len(reconciled) == reconciled_count, "one event per adjustment and added call"
        assert {e["event_id"] for e in reconciled} >= {str(a["event_id"]) for a in adjustments}
        rebuilt = rebuild_billing(events)
        rebuilt_total = sum((Decimal(r["price"]) for r in rebuilt.values()), Decimal(0))
        print(
            f"billing view total {view_total} BRL over {len(billing)} calls; rebuilt from "
            f"{len(events)} events: {rebuilt_total} BRL over {len(rebuilt)} calls"
        )
        assert rebuilt_total.quantize(Decimal("0.01")) == view_total.quantize(Decimal("0.01"))
        assert rebuilt_total == view_total
        for (_, call_id), row in rebuilt.items():
            assert Decimal(row["price"]) == billing[call_id]["price"]
            assert [row[n] for n in FIELDS[1:]] == [billing[call_id][n] for n in FIELDS[1:]]
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
