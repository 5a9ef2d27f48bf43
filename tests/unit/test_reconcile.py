"""reconcile on fakes: the ledger is made to match the provider's report, each correction is
published once, and a conference we never created is reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import jsonschema
import orjson

from service import metrics
from service.domain.conference import ConferenceStatus
from service.domain.events import envelope
from service.domain.ledger import current
from service.handlers import ReconcileDeps, advance_dialing, poll_conference, reconcile_period
from tests.databases import ROOT
from tests.fakes import FakeBudget, FakeCall, FakeClock, FakeConferenceStore, FakeProvider
from tests.unit.test_dial_protocol import DIALING_STATUSES, TIMING, command

PERIOD = (datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))


async def finished_conference(
    store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    from service.handlers import WorkerDeps, accept_command

    deps = WorkerDeps(store, provider, FakeBudget(clock), TIMING, clock, lambda: 0.5)
    cmd = command("4832830151", "4832830152")
    await accept_command(store, cmd, clock())
    for conference in await store.claim_due(DIALING_STATUSES, 10, TIMING.lease):
        await advance_dialing(deps, conference)
    provider.finish_all(talk=40, price="0.1200")
    clock.advance(10)
    for conference in await store.claim_due((ConferenceStatus.IN_PROGRESS,), 10, TIMING.lease):
        await poll_conference(deps, conference)


async def test_reconcile_corrects_adds_reports_and_publishes_each_correction_once() -> None:
    clock = FakeClock()
    store, provider = FakeConferenceStore(clock), FakeProvider()
    await finished_conference(store, provider, clock)
    deps = ReconcileDeps(store, provider, clock)
    [conference_id] = store.rows

    clean = await reconcile_period(deps, *PERIOD)
    assert clean.discrepancies == []

    provider.conferences["1000"][0].price = "0.3400"
    provider.conferences["1000"].append(
        FakeCall("9001", "+554835000001", "atendida", 60, 50, 55, "0.1200")
    )
    provider.conferences["7777"] = [FakeCall("9002", "+554836000001", "atendida", 60, 5, 9, "0.12")]

    found = await reconcile_period(deps, *PERIOD)

    assert sorted(f.kind for f in found.findings) == [
        "missing_call",
        "price_mismatch",
        "unknown_conference",
    ]
    # The ledger keeps what it billed; the correction is appended beside it.
    participants = store.conference(conference_id).participants
    assert [(p.provider_call_id, p.price, p.source) for p in participants] == [
        ("1001", Decimal("0.1200"), "command"),
        ("1002", Decimal("0.1200"), "command"),
        ("9001", Decimal("0.1200"), "reconcile"),
    ]
    [adjustment] = store.ledger_adjustments
    assert (adjustment.provider_call_id, adjustment.field, adjustment.ordinal) == (
        "1001",
        "price",
        1,
    )
    assert (adjustment.before, adjustment.after) == ("0.1200", "0.3400")
    assert adjustment.run_id == found.run_id and adjustment.source == found.source
    assert current(participants[0], store.ledger_adjustments).price == Decimal("0.3400")
    reconciled = [
        e for _, e in store.rows[conference_id].events if e.type == "conference.reconciled"
    ]
    assert [e.data["kind"] for e in reconciled] == ["call_added", "adjustment"]
    assert reconciled[1].event_id == adjustment.event_id
    assert reconciled[1].data["billing"]["totals"]["price"] == "0.5800"
    schema = json.loads((ROOT / "schemas" / "conference.events.v1.json").read_text())
    for sequence, event in enumerate(reconciled, start=10):
        value = json.loads(orjson.dumps(envelope(store.conference(conference_id), event, sequence)))
        jsonschema.validate(value, schema)
    summary = found.summary()
    assert summary["adjustments"] == {
        "price": 1,
        "billed_seconds": 0,
        "duration_seconds": 0,
        "talk_seconds": 0,
    }
    assert (summary["missing_in_ledger"], summary["foreign_conferences"]) == (1, 1)
    assert summary["totals"] == {"before": "0.2400", "after": "0.5800", "currency": "BRL"}
    assert "total BRL after" in store.run_reports[-1]

    again = await reconcile_period(deps, *PERIOD)
    assert [f.kind for f in again.findings] == ["unknown_conference"]
    assert store.event_types(conference_id).count("conference.reconciled") == 2
    assert len(store.ledger_adjustments) == 1
    assert again.summary()["events"] == 0


async def test_each_changed_field_is_one_adjustment_and_a_second_correction_is_the_next() -> None:
    clock = FakeClock()
    store, provider = FakeConferenceStore(clock), FakeProvider()
    await finished_conference(store, provider, clock)
    deps = ReconcileDeps(store, provider, clock)
    call = provider.conferences["1000"][0]
    call.billed_seconds, call.talk_seconds = 99, 77

    first = await reconcile_period(deps, *PERIOD)
    call.billed_seconds = 120
    second = await reconcile_period(deps, *PERIOD)
    third = await reconcile_period(deps, *PERIOD)

    assert [f.kind for f in first.findings] == ["duration_mismatch"]
    assert [(a.field, a.ordinal, a.before, a.after) for a in store.ledger_adjustments] == [
        ("billed_seconds", 1, "60", "99"),
        ("talk_seconds", 1, "40", "77"),
        ("billed_seconds", 2, "99", "120"),
    ]
    assert first.summary()["events"] == 2 and second.summary()["events"] == 1
    assert third.findings == [] and third.summary()["conferences_exact"] == 1
    [conference_id] = store.rows
    assert store.conference(conference_id).participants[0].billed_seconds == 60
    assert len({a.event_id for a in store.ledger_adjustments}) == 3


async def test_a_price_the_ledger_cannot_hold_exactly_is_refused_not_rounded() -> None:
    clock = FakeClock()
    store, provider = FakeConferenceStore(clock), FakeProvider()
    await finished_conference(store, provider, clock)
    deps = ReconcileDeps(store, provider, clock)
    refused = metrics.PRICES_REFUSED.labels(source="reconcile")
    before = refused._value.get()
    provider.conferences["1000"][0].price = "0.1234567"
    provider.conferences["1000"][1].price = "0.123456"

    found = await reconcile_period(deps, *PERIOD)

    assert sorted(f.kind for f in found.findings) == ["price_mismatch", "unstorable_price"]
    assert [(a.provider_call_id, a.after) for a in store.ledger_adjustments] == [
        ("1002", "0.123456")
    ]
    assert refused._value.get() == before + 1
    assert found.summary()["unstorable_prices"] == 1


class ClaimTakenOnSave(FakeConferenceStore):
    """A poller's claim lands between reconcile's claim and its save, `steals` times."""

    def __init__(self, clock: FakeClock, steals: int) -> None:
        super().__init__(clock)
        self.steals = steals
        self.saves: list[bool] = []
        self.reconcile_claims: set[Any] = set()

    async def save(self, conference: Any, events: Any, next_action_in: Any, **kw: Any) -> bool:
        if self.steals and conference.claim_token in self.reconcile_claims:
            self.steals -= 1
            self.rows[conference.id].conference.claim_token = uuid4()
        saved = await super().save(conference, events, next_action_in, **kw)
        self.saves.append(saved)
        return saved

    async def claim_for_reconcile(self, provider_conference_id: str, lease_seconds: float) -> Any:
        conference, ours = await super().claim_for_reconcile(provider_conference_id, lease_seconds)
        if conference is not None:
            self.reconcile_claims.add(conference.claim_token)
        return conference, ours


async def test_a_correction_whose_claim_was_taken_is_retried_and_written() -> None:
    clock = FakeClock()
    provider = FakeProvider()
    store = ClaimTakenOnSave(clock, steals=1)
    await finished_conference(store, provider, clock)
    provider.conferences["1000"][0].price = "0.3400"

    found = await reconcile_period(ReconcileDeps(store, provider, clock), *PERIOD)

    assert [f.kind for f in found.findings] == ["price_mismatch"]
    assert store.saves[-2:] == [False, True]
    [adjustment] = store.ledger_adjustments
    assert (adjustment.field, adjustment.after) == ("price", "0.3400")


async def test_a_correction_that_never_gets_written_is_reported_busy() -> None:
    clock = FakeClock()
    provider = FakeProvider()
    store = ClaimTakenOnSave(clock, steals=100)
    await finished_conference(store, provider, clock)
    provider.conferences["1000"][0].price = "0.3400"

    found = await reconcile_period(ReconcileDeps(store, provider, clock), *PERIOD)

    assert [f.kind for f in found.discrepancies] == ["busy"]
    assert store.runs[-1] == found.findings
    [conference] = store.rows.values()
    assert conference.conference.participants[0].price == Decimal("0.1200")
    assert store.ledger_adjustments == []
