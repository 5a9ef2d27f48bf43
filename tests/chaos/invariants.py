"""The guarantees of CONTRACT.md, checked after a scenario has broken things on purpose."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

from tests.e2e.conftest import Lane
from tests.e2e.helpers import ledger, wait_final
from tests.e2e.topics import events_by_conference

# Once faults stop, every accepted conference must be final within this many seconds.
SETTLE_BOUND_SECONDS = 120


async def check_invariants(lane: Lane, accepted: list[str], scenario: str) -> dict[str, int]:
    """Fail on any broken guarantee; the counts seen, printed for the record."""
    db = await lane.connect()
    try:
        rows = await wait_final(db, accepted, timeout=SETTLE_BOUND_SECONDS)
        ids = [uuid.UUID(i) for i in accepted]
        dialing = await db.fetchval(
            "SELECT count(*) FROM participant WHERE conference_id = ANY($1) AND dial_state = 'dialing'",
            ids,
        )
        billing = await db.fetch(
            "SELECT provider_call_id FROM billing_conference_call WHERE conference_id = ANY($1)",
            ids,
        )
        participants = await db.fetch(
            "SELECT conference_id, number, provider_call_id FROM participant"
            " WHERE conference_id = ANY($1) AND source = 'command'",
            ids,
        )
    finally:
        await db.close()
    async with lane.simulator() as sim:
        provider = await ledger(sim)

    ours = {r["provider_conference_id"] for r in rows.values() if r["provider_conference_id"]}
    dials = [d for d in provider["dials"] if str(d["conference_id"]) in ours]
    calls = [
        str(c["id"])
        for conference in provider["conferences"]
        if str(conference["id"]) in ours
        for c in conference["calls"]
    ]
    billed = [r["provider_call_id"] for r in billing]
    events = await events_by_conference(lane, set(accepted), timeout=60)

    assert all(d["count"] <= 1 for d in dials), [d for d in dials if d["count"] > 1]
    assert len(dials) <= len(participants), "no more dials than participants"
    assert Counter(billed) == Counter(calls), "one billing row per provider call"
    assert dialing == 0, "nothing left dialing"
    for conference_id in accepted:
        stream = events[conference_id]
        ids_by_sequence: dict[int, set[str]] = defaultdict(set)
        sequences_by_id: dict[str, set[int]] = defaultdict(set)
        for event in stream:
            ids_by_sequence[event["sequence"]].add(event["event_id"])
            sequences_by_id[event["event_id"]].add(event["sequence"])
        assert all(len(v) == 1 for v in ids_by_sequence.values()), "one event_id per change"
        assert all(len(v) == 1 for v in sequences_by_id.values()), "an id never changes place"
        assert sorted(ids_by_sequence) == list(range(1, len(ids_by_sequence) + 1))
    statuses = Counter(r["status"] for r in rows.values())
    figures: dict[str, Any] = {
        "accepted": len(accepted),
        **{f"final_{k}": v for k, v in statuses.items()},
        "dials": len(dials),
        "max_dials_per_number": max((d["count"] for d in dials), default=0),
        "provider_calls": len(calls),
        "billing_rows": len(billed),
        "left_dialing": dialing,
        "events": sum(len(v) for v in events.values()),
        "redelivered_events": sum(
            len(v) - len({e["event_id"] for e in v}) for v in events.values()
        ),
    }
    print(
        f"\nchaos[{scenario}] invariants held: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    )
    return figures
