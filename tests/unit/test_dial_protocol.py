"""The dial protocol and the poll loop on in-memory fakes: nobody is dialed twice, whatever
answer is lost, and a conference ends with its exact billing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from service.domain.commands import ConferenceCommand, CreateConference
from service.domain.conference import ConferenceStatus, DialState
from service.handlers import Timing, WorkerDeps, accept_command, advance_dialing, poll_conference
from service.ports import (
    DialOutcomeUnknown,
    ProviderAuthFailed,
    ProviderNoBalance,
    ProviderNotPermitted,
    ProviderRejected,
    ProviderUnavailable,
    Urgency,
)
from tests.fakes import FakeBudget, FakeClock, FakeConferenceStore, FakeProvider

DIALING_STATUSES = (ConferenceStatus.ACCEPTED, ConferenceStatus.DIALING)
TIMING = Timing(
    poll_first=2,
    poll_max=30,
    dial_grace=15,
    lease=60,
    settle_deadline=3600,
    default_max_duration=1800,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeConferenceStore:
    return FakeConferenceStore(clock)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def deps(store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock) -> WorkerDeps:
    return WorkerDeps(
        store=store,
        provider=provider,
        budget=FakeBudget(clock),
        timing=TIMING,
        clock=clock,
        random=lambda: 0.5,
    )


def command(*numbers: str, key: str = "key-1") -> ConferenceCommand:
    return ConferenceCommand(
        type="conference.create",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller="billing-team",
        idempotency_key=key,
        requested_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        payload=CreateConference.model_validate(
            {"participants": [{"number": n} for n in numbers], "reference": "ticket-1"}
        ),
    )


async def step(deps: WorkerDeps, store: FakeConferenceStore) -> None:
    for conference in await store.claim_due(DIALING_STATUSES, 10, TIMING.lease):
        await advance_dialing(deps, conference)
    for conference in await store.claim_due((ConferenceStatus.IN_PROGRESS,), 10, TIMING.lease):
        await poll_conference(deps, conference)


async def test_conference_is_dialed_polled_and_completed_with_exact_billing(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151", "+5548999990000")
    assert await accept_command(store, cmd, clock())

    await step(deps, store)
    assert store.conference(cmd.conference_id).status is ConferenceStatus.IN_PROGRESS
    assert [n for _, n in provider.dials] == ["+554832830151", "+5548999990000"]

    clock.advance(3)
    await step(deps, store)
    assert store.conference(cmd.conference_id).status is ConferenceStatus.IN_PROGRESS

    provider.finish_all(talk=42, price="0.1200")
    clock.advance(10)
    await step(deps, store)

    conference = store.conference(cmd.conference_id)
    assert conference.status is ConferenceStatus.COMPLETED
    assert [(p.billed_seconds, p.talk_seconds, p.price) for p in conference.participants] == [
        (60, 42, Decimal("0.1200")),
        (60, 42, Decimal("0.1200")),
    ]
    assert provider.ended == {conference.provider_conference_id}
    assert store.event_types(cmd.conference_id) == [
        "conference.accepted",
        "conference.dialed",
        "participant.status_changed",
        "participant.status_changed",
        "participant.status_changed",
        "participant.status_changed",
        "conference.completed",
    ]


async def test_redelivered_command_is_accepted_once(
    store: FakeConferenceStore, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    assert await accept_command(store, cmd, clock())
    assert not await accept_command(store, cmd, clock())
    assert not await accept_command(
        store, cmd.model_copy(update={"command_id": uuid.uuid4()}), clock()
    )
    assert len(store.rows) == 1


async def test_lost_dial_answer_is_resolved_from_the_provider_without_dialing_again(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    provider.fail_next_dial_with = DialOutcomeUnknown("read timeout")

    await step(deps, store)
    assert store.conference(cmd.conference_id).participants[0].dial_state is DialState.DIALING

    clock.advance(5)  # within the grace period: nothing happens
    await step(deps, store)
    clock.advance(TIMING.dial_grace)
    await step(deps, store)

    participant = store.conference(cmd.conference_id).participants[0]
    assert participant.dial_state is DialState.DIALED
    assert participant.provider_call_id == provider.conferences["1000"][0].call_id
    assert len(provider.dials) == 1


async def test_dial_that_never_reached_the_provider_is_placed_once_after_the_grace_period(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    provider.place_call_before_failing = False
    provider.fail_next_dial_with = DialOutcomeUnknown("connection reset")

    await step(deps, store)
    assert provider.dials == []
    clock.advance(TIMING.dial_grace + 1)
    await step(deps, store)
    clock.advance(TIMING.dial_grace + 1)
    await step(deps, store)

    assert len(provider.dials) == 1
    assert store.conference(cmd.conference_id).status is ConferenceStatus.IN_PROGRESS


async def test_rate_limited_dial_is_retried_later_and_placed_once(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    provider.place_call_before_failing = False
    provider.fail_next_dial_with = ProviderUnavailable("limite", status=429)

    await step(deps, store)
    assert store.conference(cmd.conference_id).participants[0].dial_state is DialState.PENDING
    clock.advance(5)
    await step(deps, store)
    assert len(provider.dials) == 1


async def test_conference_whose_every_dial_is_refused_fails_with_its_reason(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    provider.place_call_before_failing = False
    provider.fail_next_dial_with = ProviderRejected("saldo insuficiente", status=402, reason=9)

    await step(deps, store)

    conference = store.conference(cmd.conference_id)
    assert conference.status is ConferenceStatus.FAILED
    assert conference.participants[0].rejection_reason == "saldo insuficiente"
    assert store.event_types(cmd.conference_id)[-1] == "conference.failed"


async def test_worker_that_lost_its_lease_dials_nobody(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    stale = (await store.claim_due(DIALING_STATUSES, 10, TIMING.lease))[0]
    clock.advance(TIMING.lease + 1)
    await store.claim_due(DIALING_STATUSES, 10, TIMING.lease)  # another worker takes it

    await advance_dialing(deps, stale)

    assert provider.dials == []


async def test_busy_participant_is_settled_at_zero_price(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    await step(deps, store)
    provider.finish_all(status="ocupado")
    provider.conferences["1000"][0].price = None
    clock.advance(3)
    await step(deps, store)

    participant = store.conference(cmd.conference_id).participants[0]
    assert (participant.provider_status, participant.price, participant.billed_seconds) == (
        "ocupado",
        Decimal("0"),
        None,
    )
    assert store.conference(cmd.conference_id).status is ConferenceStatus.COMPLETED


async def test_conference_canceled_before_dialing_dials_nobody(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    await store.request_cancel("billing-team", cmd.conference_id)

    await step(deps, store)

    assert store.conference(cmd.conference_id).status is ConferenceStatus.CANCELED
    assert provider.dials == []
    assert store.event_types(cmd.conference_id)[-1] == "conference.canceled"


async def test_conference_canceled_while_talking_is_ended_and_billed(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151", "4832830152")
    await accept_command(store, cmd, clock())
    await step(deps, store)
    await store.request_cancel("billing-team", cmd.conference_id)
    clock.advance(1)
    await step(deps, store)
    assert provider.ended == {"1000"}
    provider.finish_all(talk=12, price="0.1200")
    clock.advance(30)
    await step(deps, store)

    conference = store.conference(cmd.conference_id)
    assert conference.status is ConferenceStatus.CANCELED
    assert [p.price for p in conference.participants] == [Decimal("0.1200"), Decimal("0.1200")]


async def test_conference_not_settled_by_the_deadline_becomes_unresolved_with_its_event(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    await step(deps, store)
    provider.conferences["1000"][0].status = "atendida"  # answered, never billed
    clock.advance(TIMING.settle_deadline + 1)
    await step(deps, store)

    conference = store.conference(cmd.conference_id)
    assert conference.status is ConferenceStatus.UNRESOLVED
    assert conference.failure_reason == "not settled by the deadline"
    assert store.event_types(cmd.conference_id)[-1] == "conference.unresolved"


async def test_unknown_provider_status_is_kept_raw_and_never_settles(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    await step(deps, store)
    provider.conferences["1000"][0].status = "em espera"
    clock.advance(5)
    await step(deps, store)

    participant = store.conference(cmd.conference_id).participants[0]
    assert participant.provider_status == "em espera"
    assert participant.settled_at is None
    assert store.conference(cmd.conference_id).status is ConferenceStatus.IN_PROGRESS


ECHO_FORMS = {
    "national": lambda e164: e164[3:],
    "digits55": lambda e164: e164[1:],
    "e164": lambda e164: e164,
}


@pytest.mark.parametrize("form", ECHO_FORMS)
async def test_a_number_the_provider_lists_without_an_id_is_never_dialed_again(
    deps: WorkerDeps,
    store: FakeConferenceStore,
    provider: FakeProvider,
    clock: FakeClock,
    form: str,
) -> None:
    """The dial's answer was lost, and the provider's list shows the number (in its own echo
    form) but no call id, as its flat answer does: the call was placed."""
    cmd = command("4832830151", "48999990000")
    await accept_command(store, cmd, clock())
    provider.echo_numbers_as = ECHO_FORMS[form]
    provider.fail_next_dial_with = DialOutcomeUnknown("read timeout")

    await step(deps, store)
    clock.advance(TIMING.dial_grace + 1)
    await step(deps, store)
    provider.finish_all(talk=42, price="0.123456")
    clock.advance(TIMING.poll_max)
    await step(deps, store)

    assert sorted(n for _, n in provider.dials) == ["+554832830151", "+5548999990000"]
    conference = store.conference(cmd.conference_id)
    assert conference.status is ConferenceStatus.COMPLETED
    assert [(p.dial_state, p.billed_seconds, p.price) for p in conference.participants] == [
        (DialState.DIALED, 60, Decimal("0.123456"))
    ] * 2


async def test_a_conference_the_provider_never_creates_ends_unresolved_at_the_deadline(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    provider.fail_creates_with = ProviderUnavailable("502 Bad Gateway", status=502)

    for _ in range(100):
        await step(deps, store)
        if store.conference(cmd.conference_id).status.is_final:
            break
        clock.advance(TIMING.settle_deadline / 50)

    conference = store.conference(cmd.conference_id)
    assert conference.status is ConferenceStatus.UNRESOLVED
    assert conference.failure_reason == (
        "not dialed by the settle deadline: the provider never created the conference"
    )
    assert provider.dials == []
    assert store.event_types(cmd.conference_id)[-1] == "conference.unresolved"


async def test_every_dial_goes_at_a_time_booked_before_its_mark(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    """A tight budget: the step books what fits in half a lease and dials only those; the
    rest wait for a later step, never for budget after their mark."""
    tight = FakeBudget(clock, rate=0.2)  # one request every 5 s; half a lease is 30 s
    deps = WorkerDeps(store, provider, tight, TIMING, clock, lambda: 0.5)
    numbers = [f"4832830{i:03d}" for i in range(10)]
    cmd = command(*numbers)
    await accept_command(store, cmd, clock())

    await step(deps, store)
    marked = store.conference(cmd.conference_id).participants
    # The create and six dials fit in 30 s: 0, 5, ..., 30 s.
    assert sum(p.dial_state is DialState.DIALED for p in marked) == 6
    assert all(p.dial_state is DialState.PENDING for p in marked[6:])
    assert [p.dial_started_at for p in marked[:6]] == tight.booked[1:7]

    for _ in range(10):
        clock.advance(31)
        await step(deps, store)
    assert sorted(n for _, n in provider.dials) == sorted(f"+55{n}" for n in numbers)


@pytest.mark.parametrize(
    "refusal",
    [
        ProviderAuthFailed("access token inválido", status=403, reason=40),
        ProviderNotPermitted("conta sem permissão", status=403, reason=8),
        ProviderNoBalance("saldo insuficiente", status=402, reason=9),
    ],
    ids=["bad-token", "not-permitted", "no-balance"],
)
async def test_an_account_refusal_pauses_the_dialer_and_fails_nobody(
    deps: WorkerDeps,
    store: FakeConferenceStore,
    provider: FakeProvider,
    clock: FakeClock,
    refusal: Exception,
) -> None:
    """A bad secret rollout (or an empty balance) is the account's fault, not the
    conference's: conferences wait, with backoff, and complete once the account works."""
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    provider.fail_creates_with = refusal

    await step(deps, store)
    assert deps.account.remaining(clock()) == pytest.approx(5)
    clock.advance(5)
    await step(deps, store)  # the probe is refused again: the pause doubles
    assert deps.account.remaining(clock()) == pytest.approx(10)
    assert store.conference(cmd.conference_id).status is ConferenceStatus.ACCEPTED

    provider.fail_creates_with = None
    clock.advance(10)
    await step(deps, store)
    assert deps.account.remaining(clock()) == 0
    assert store.conference(cmd.conference_id).status is ConferenceStatus.IN_PROGRESS
    assert len(provider.dials) == 1


async def test_a_dial_refused_for_the_accounts_sake_waits_instead_of_being_rejected(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    provider.place_call_before_failing = False
    provider.fail_next_dial_with = ProviderNoBalance("saldo insuficiente", status=402, reason=9)

    await step(deps, store)
    participant = store.conference(cmd.conference_id).participants[0]
    assert participant.dial_state is DialState.PENDING
    assert deps.account.remaining(clock()) > 0

    clock.advance(6)
    await step(deps, store)
    assert store.conference(cmd.conference_id).participants[0].dial_state is DialState.DIALED
    assert len(provider.dials) == 1


async def test_a_poll_yields_to_dials_until_it_has_waited_its_cap(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    await step(deps, store)  # created and dialed
    budget = deps.budget
    assert isinstance(budget, FakeBudget)
    assert budget.urgencies == [Urgency.CREATE, Urgency.DIAL]

    clock.advance(TIMING.poll_first * 1.3)
    await step(deps, store)  # due just now: a poll like any other
    assert budget.urgencies[-1] is Urgency.POLL

    row = store.rows[cmd.conference_id]
    assert row.next_action_at is not None
    clock.advance((row.next_action_at - clock()).total_seconds() + TIMING.poll_max)
    await step(deps, store)  # it waited its cap for its turn: it goes ahead
    assert budget.urgencies[-1] is Urgency.DIAL


async def test_a_price_the_ledger_would_round_is_refused_not_billed(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    cmd = command("4832830151")
    await accept_command(store, cmd, clock())
    await step(deps, store)
    provider.finish_all(talk=42, price="0.1234567")  # seven places: numeric(18, 6) rounds it
    clock.advance(TIMING.poll_max)
    await step(deps, store)

    [participant] = store.conference(cmd.conference_id).participants
    assert participant.price is None and not participant.is_settled
    assert store.conference(cmd.conference_id).status is ConferenceStatus.IN_PROGRESS
