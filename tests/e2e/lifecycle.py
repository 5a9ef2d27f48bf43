"""The lifecycle run shared by the lifecycle test and the dialect matrix: conferences with every
outcome, one refused number, one deleted while talking; then the checks, participant by participant,
against the simulator's ledger: final statuses, no double dial, exact billing, contiguous events."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from tests.e2e.conftest import Lane
from tests.e2e.helpers import FINAL, create_conferences, ledger, validate_events
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
REGULAR = ["01", "02", "03", "04", "05", "06", "07", "08"]
# 11 digits whose subscriber part does not start with 9: valid to us, refused by the provider.
REFUSED_NUMBER = "48123456789"
FINAL_EVENT = {
    "completed": "conference.completed",
    "failed": "conference.failed",
    "canceled": "conference.canceled",
}


def number(index: int, suffix: str) -> str:
    return f"4832{index:04d}{suffix}"


def outcome_rules(ring_seconds: int) -> list[dict[str, Any]]:
    return [
        {
            "match": f"{suffix}$",
            "status": status,
            "ring_seconds": ring_seconds,
            "talk_seconds": talk,
        }
        for suffix, (status, talk) in OUTCOMES.items()
    ]


def lifecycle_bodies(conferences: int) -> list[dict[str, Any]]:
    """`conferences` of two participants with every outcome, then the refused and the deleted."""
    bodies: list[dict[str, Any]] = [
        {
            "participants": [
                {"number": number(i, REGULAR[i % 8])},
                {"number": number(i, REGULAR[(i + 3) % 8])},
            ],
            "reference": f"batch-{i}",
        }
        for i in range(conferences)
    ]
    bodies.append({"participants": [{"number": REFUSED_NUMBER}], "reference": "refused"})
    bodies.append({"participants": [{"number": number(9999, "09")}], "reference": "deleted"})
    return bodies


@dataclass
class LifecycleRun:
    """What a run found, gathered before any check so that a failing dialect still reports."""

    conferences: int
    statuses: dict[str, str]
    expected: dict[str, str]
    max_dials: int
    dialed: int
    billing_total: Decimal
    ledger_total: Decimal
    mismatched: list[str] = field(default_factory=list)
    ended_after_finalized: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def summary(self, label: str) -> str:
        not_final = sum(1 for s in self.statuses.values() if s not in FINAL)
        wrong = sum(1 for i, s in self.expected.items() if self.statuses.get(i) != s)
        return (
            f"{label}: conferences {self.conferences} (wrong outcome {wrong}, not final "
            f"{not_final}), dials per participant (max) {self.max_dials}, billing total "
            f"{self.billing_total} vs ledger {self.ledger_total}, mismatched participants "
            f"{len(self.mismatched)}, ended after finalized {self.ended_after_finalized}"
            + (f"; wrong outcomes' reasons {dict(self.failure_reasons)}" if wrong else "")
        )


async def run_lifecycle(lane: Lane, db: asyncpg.Connection, conferences: int) -> LifecycleRun:
    """Create, delete the long one once it talks, wait (bounded) until all are final, collect."""
    bodies = lifecycle_bodies(conferences)
    async with lane.api() as api, lane.simulator() as sim:
        ids = await create_conferences(api, bodies)
        deleted = ids[-1]

        async def running() -> bool:
            view = (await api.get(f"/v1/conferences/{deleted}")).json()
            return (
                view["status"] == "in_progress" and view["participants"][0]["status"] == "atendida"
            )

        # Not seen talking is reported by the checks (its outcome), after the summary.
        with contextlib.suppress(AssertionError):
            await eventually(running, 30, "the long conference to be talking")
        cancel = await api.delete(f"/v1/conferences/{deleted}")
        assert cancel.status_code == 202
        rows = await _rows_when_final(db, ids, timeout=max(60, conferences * 0.9))
        provider = await ledger(sim)

    expected = {i: "completed" for i in ids}
    expected[ids[-2]] = "failed"
    expected[deleted] = "canceled"
    ours = {r["provider_conference_id"] for r in rows.values() if r["provider_conference_id"]}
    dials = [d for d in provider["dials"] if str(d["conference_id"]) in ours]
    # Participant by participant: the provider's call for (conference, number), whatever id.
    provider_calls = {
        (str(conference["id"]), call["number"]): call
        for conference in provider["conferences"]
        if str(conference["id"]) in ours
        for call in conference["calls"]
    }
    billing = await db.fetch(
        "SELECT * FROM billing_conference_call WHERE conference_id = ANY($1)",
        [uuid.UUID(i) for i in ids],
    )
    billed = {(r["provider_conference_id"], r["number"]): r for r in billing}
    run = LifecycleRun(
        conferences=len(ids),
        statuses={i: r["status"] for i, r in rows.items()},
        expected=expected,
        max_dials=max((d["count"] for d in dials), default=0),
        dialed=len(dials),
        billing_total=sum((r["price"] for r in billing), Decimal(0)),
        ledger_total=sum((Decimal(c["price"] or 0) for c in provider_calls.values()), Decimal(0)),
        failure_reasons=Counter(
            str(r["failure_reason"]) for i, r in rows.items() if r["status"] != expected[i]
        ),
        ended_after_finalized=sum(
            1 for r in billing if r["ended_at"] is not None and r["ended_at"] > r["finalized_at"]
        ),
    )
    for key, call in provider_calls.items():
        row = billed.get(key)
        if row is None or not _bills_match(row, call):
            run.mismatched.append(f"{key}: service {row and dict(row)!r}, provider {call!r}")
    run.mismatched.extend(
        f"{key}: billed, unknown to the provider" for key in billed.keys() - provider_calls.keys()
    )
    if all(status in FINAL for status in run.statuses.values()):
        run.events = await events_by_conference(lane, set(ids), timeout=60)
    return run


def check_lifecycle(run: LifecycleRun) -> None:
    """Every conference ended right, nobody was dialed twice, billing is the provider's to the
    cent, participant by participant, and each conference's events run 1, 2, 3… to its end."""
    assert run.statuses == run.expected
    assert run.max_dials == 1
    # Everyone was dialed but the number the provider refused.
    assert run.dialed == 2 * (run.conferences - 2) + 1
    assert not run.mismatched, "\n".join(run.mismatched[:10])
    assert run.billing_total == run.ledger_total
    assert run.ended_after_finalized == 0
    for conference_id, status in run.expected.items():
        stream = run.events[conference_id]
        assert [e["sequence"] for e in stream] == list(range(1, len(stream) + 1)), stream
        assert stream[0]["type"] == "conference.accepted"
        assert stream[-1]["type"] == FINAL_EVENT[status]
        assert len({e["event_id"] for e in stream}) == len(stream)
        validate_events(stream)


def _bills_match(row: asyncpg.Record, call: dict[str, Any]) -> bool:
    suffix = row["number"][-2:]
    expected_status = OUTCOMES[suffix][0] if suffix in OUTCOMES and suffix != "09" else None
    return (
        (row["provider_status"], row["billed_seconds"], row["talk_seconds"])
        == (call["status"], call["billed_seconds"], call["talk_seconds"])
        and row["duration_seconds"] == call["duration_seconds"]
        and call["price"] is not None
        and row["price"] == Decimal(call["price"])
        and row["provider_call_id"] in (None, str(call["id"]))
        and (expected_status is None or row["provider_status"] == expected_status)
        and (suffix != "09" or 0 < row["talk_seconds"] < 3000)
    )


async def _rows_when_final(
    db: asyncpg.Connection, ids: list[str], timeout: float
) -> dict[str, asyncpg.Record]:
    """Every conference's row once all are final, or as they are at the deadline."""
    wanted = [uuid.UUID(i) for i in ids]

    async def all_final() -> bool:
        rows = await db.fetch(
            "SELECT count(*) AS n FROM conference WHERE id = ANY($1) AND status = ANY($2)",
            wanted,
            FINAL,
        )
        return bool(rows[0]["n"] == len(wanted))

    # A timeout is reported by the checks, after the summary is printed.
    with contextlib.suppress(AssertionError):
        await eventually(all_final, timeout, f"{len(ids)} conferences to be final", 0.5)
    rows = await db.fetch("SELECT * FROM conference WHERE id = ANY($1)", wanted)
    return {str(r["id"]): r for r in rows}
