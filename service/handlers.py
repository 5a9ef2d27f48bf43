"""The use cases, one function each: accept a command, dial a conference's participants, poll it
until every call is settled, and finish it. They await only the ports they are given."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from service import failpoints, metrics
from service.domain.account import AccountPause
from service.domain.commands import AddParticipantCommand, ConferenceCommand
from service.domain.conference import (
    CallReport,
    Conference,
    ConferenceReport,
    ConferenceStatus,
    DialState,
    Participant,
    is_known_call_status,
    match_call,
    next_poll_delay,
    outcome_when_settled,
)
from service.domain.events import (
    EventType,
    PendingEvent,
    billing_snapshot,
    event_id,
    money,
    participant_snapshot,
)
from service.domain.ledger import (
    ADJUSTABLE_FIELDS,
    AdjustableField,
    Adjustment,
    as_text,
    current,
    current_conference,
    field_value,
    storable_price,
)
from service.logging import get_logger
from service.ports import (
    ConferenceStore,
    DialOutcomeUnknown,
    Finding,
    ProviderAccountRefused,
    ProviderBudget,
    ProviderClient,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    ReconcileLedger,
    Urgency,
)

log = get_logger(__name__)

_NOT_DIALED = (DialState.PENDING, DialState.DIALING)

_FINAL_EVENT = {
    ConferenceStatus.COMPLETED: EventType.COMPLETED,
    ConferenceStatus.FAILED: EventType.FAILED,
    ConferenceStatus.CANCELED: EventType.CANCELED,
    ConferenceStatus.UNRESOLVED: EventType.UNRESOLVED,
}


@dataclass(frozen=True)
class Timing:
    poll_first: float
    poll_max: float
    dial_grace: float
    lease: float
    settle_deadline: float
    default_max_duration: int
    webhooks: bool = False
    poll_safety: float = 120.0


@dataclass(frozen=True)
class WorkerDeps:
    store: ConferenceStore
    provider: ProviderClient
    budget: ProviderBudget
    timing: Timing
    clock: Callable[[], datetime]
    random: Callable[[], float]
    account: AccountPause = field(default_factory=AccountPause)


async def accept_command(store: ConferenceStore, command: ConferenceCommand, now: datetime) -> bool:
    """Make the command a conference (once, however often it is delivered)."""
    event = PendingEvent(
        event_id=event_id(command.conference_id, EventType.ACCEPTED),
        type=EventType.ACCEPTED,
        occurred_at=now,
        data={
            "command_id": str(command.command_id),
            "requested_at": command.requested_at.isoformat(),
            "participants": [p.number for p in command.payload.participants],
        },
    )
    return await store.accept(command, event)


async def advance_dialing(deps: WorkerDeps, conference: Conference) -> None:
    """Create the conference at the provider and dial each participant at most once.

    Each dial's send time is booked from the provider budget first; then the participant is
    marked `dialing` with that time, committed, and only then dialed, at its time. A crash or a
    lost answer leaves a visible unknown outcome that says until when the request could still
    be on its way; past that it is resolved from the provider's call list, never by dialing
    again. No dial waits for budget after its mark, and nothing waits past the claim's lease.
    """
    store, provider = deps.store, deps.provider
    if _past_deadline(deps, conference):
        await _finish(deps, conference, ConferenceStatus.UNRESOLVED, _why_not_dialed(conference))
        return
    if conference.cancel_requested_at is not None:
        for participant in conference.participants:
            if participant.dial_state is DialState.PENDING:
                participant.dial_state = DialState.REJECTED
                participant.rejection_reason = "canceled before it was dialed"
        if conference.provider_conference_id is None:
            await _finish(deps, conference, ConferenceStatus.CANCELED, "canceled before dialing")
            return
    paused = deps.account.remaining(deps.clock())
    if paused:
        await store.save(conference, [], paused)
        return
    not_after = _booking_deadline(deps)
    if conference.provider_conference_id is None:
        slot = await deps.budget.book_when_free(Urgency.CREATE, not_after)
        if slot is None:
            await store.save(conference, [], deps.budget.seconds_until_free())
            return
        try:
            conference.provider_conference_id = await provider.create_conference(at=slot)
            failpoints.reached("after_create")
            _account_works(deps)
        except ProviderAccountRefused as error:
            await store.save(conference, [], _account_refused(deps, error))
            return
        except ProviderUnavailable as error:
            log.warning(
                "provider_create_deferred", conference_id=str(conference.id), error=str(error)
            )
            await store.save(conference, [], _retry_delay(deps))
            return
        except ProviderError as error:
            await _finish(deps, conference, ConferenceStatus.FAILED, f"create refused: {error}")
            return
        # Not saved yet: the provider's id is committed together with the dialing marks
        # below. A crash before that only leaves an empty room at the provider, never a call.
        conference.status = ConferenceStatus.DIALING

    if not await _dial_pending(deps, conference, not_after, "start"):
        return
    if all(p.dial_state is DialState.REJECTED for p in conference.participants):
        outcome = outcome_when_settled(conference)
        reason = "every dial was refused" if outcome is ConferenceStatus.FAILED else None
        await _finish(deps, conference, outcome, reason)
        return
    conference.status = ConferenceStatus.IN_PROGRESS
    dialed = PendingEvent(
        event_id=event_id(conference.id, EventType.DIALED),
        type=EventType.DIALED,
        occurred_at=deps.clock(),
        data={
            "provider_conference_id": conference.provider_conference_id,
            "participants": [participant_snapshot(p) for p in conference.participants],
        },
    )
    await store.save(conference, [dialed], _next_poll(deps, conference))


async def _dial_pending(
    deps: WorkerDeps, conference: Conference, not_after: datetime, phase: str
) -> bool:
    """Dial every pending participant once: unknown outcomes resolved first, then a send time
    booked for each, all marked `dialing` in one commit, then dialed at their times. True when
    nobody is left pending or dialing (the outcomes are on the participants, for the caller's
    save to commit); False when the step saved and must stop. `phase` names the failpoints:
    `start` for a conference's first participants, `added` for those added while it runs."""
    store, timing = deps.store, deps.timing
    unknown = any(p.dial_state is DialState.DIALING for p in conference.participants)
    if unknown and not await _resolve_unknown_dials(deps, conference, not_after):
        return False

    pending = [p for p in conference.participants if p.dial_state is DialState.PENDING]
    if pending:
        slots = deps.budget.book(len(pending), not_after)
        if not slots:
            await store.save(conference, [], deps.budget.seconds_until_free())
            return False
        # Everyone with a send time is marked, in one commit, before anyone is dialed; the
        # lease is held until the last of them can no longer be on its way.
        dialing = pending[: len(slots)]
        for participant, slot in zip(dialing, slots, strict=True):
            participant.dial_state = DialState.DIALING
            participant.dial_started_at = slot
        hold = (slots[-1] - deps.clock()).total_seconds() + timing.dial_grace
        if not await store.save(conference, [], hold, hold=True):
            return False
        failpoints.reached(_FAILPOINTS[phase][0])
        await asyncio.gather(
            *(_dial(deps, conference, p, slot) for p, slot in zip(dialing, slots, strict=True))
        )
        failpoints.reached(_FAILPOINTS[phase][1])
        if any(p.dial_state is DialState.PENDING for p in conference.participants):
            # Refused before it was processed (429), or the budget served only some: the rest
            # go in a later step, when the budget has room again.
            await store.save(conference, [], max(deps.budget.seconds_until_free(), 0.5))
            return False
        # The dials' outcomes are committed by whichever save ends this step; until then
        # they read as `dialing` and would be resolved, never dialed again.

    if any(p.dial_state is DialState.DIALING for p in conference.participants):
        await store.save(conference, [], timing.dial_grace)
        return False
    return True


# The failpoints around the dials (after the marks, after the answers), by phase.
_FAILPOINTS = {
    "start": ("after_mark_dialing", "after_dial"),
    "added": ("after_mark_dialing_added", "after_dial_added"),
}


async def accept_participant_command(
    store: ConferenceStore,
    command: AddParticipantCommand,
    now: datetime,
    default_max_duration: int,
) -> bool:
    """Add the participant to its conference (once, however often it is delivered); the
    dialer or the poller then dials it."""

    def added(position: int) -> PendingEvent:
        return PendingEvent(
            event_id=event_id(
                command.conference_id, EventType.PARTICIPANT_ADDED, str(command.command_id)
            ),
            type=EventType.PARTICIPANT_ADDED,
            occurred_at=now,
            data={
                "command_id": str(command.command_id),
                "requested_at": command.requested_at.isoformat(),
                "position": position,
                "number": command.payload.number,
            },
        )

    return await store.accept_participant(command, added, default_max_duration)


async def _dial_added(deps: WorkerDeps, conference: Conference) -> None:
    """Participants added while the conference runs: dialed with the protocol of its start,
    then polled with the others."""
    if conference.cancel_requested_at is not None:
        for participant in conference.participants:
            if participant.dial_state is DialState.PENDING:
                participant.dial_state = DialState.REJECTED
                participant.rejection_reason = "canceled before it was dialed"
        if not any(p.dial_state is DialState.DIALING for p in conference.participants):
            await deps.store.save(conference, [], 0)
            return
    paused = deps.account.remaining(deps.clock())
    if paused:
        await deps.store.save(conference, [], paused)
        return
    if await _dial_pending(deps, conference, _booking_deadline(deps), "added"):
        # Its call's status comes with the next poll (or the provider's webhook).
        await deps.store.save(conference, [], _retry_delay(deps))


def _why_not_dialed(conference: Conference) -> str:
    if conference.provider_conference_id is None:
        return "not dialed by the settle deadline: the provider never created the conference"
    states = Counter(p.dial_state.value for p in conference.participants)
    return f"not dialed by the settle deadline: participants {dict(sorted(states.items()))}"


async def _dial(
    deps: WorkerDeps, conference: Conference, participant: Participant, slot: datetime
) -> None:
    """One dial, at its booked time; its outcome is left on the participant for the caller to
    commit."""
    assert conference.provider_conference_id is not None
    try:
        participant.provider_call_id = await deps.provider.add_participant(
            conference.provider_conference_id,
            participant.number,
            participant.caller_id,
            participant.record,
            at=slot,
        )
        participant.dial_state = DialState.DIALED
        _account_works(deps)
    except DialOutcomeUnknown as error:
        log.warning(
            "dial_outcome_unknown",
            conference_id=str(conference.id),
            position=participant.position,
            error=str(error),
        )
    except ProviderUnavailable as error:
        # Refused before it was processed (429, no connection, its time missed): nobody was
        # dialed.
        participant.dial_state = DialState.PENDING
        participant.dial_started_at = None
        log.warning("dial_deferred", conference_id=str(conference.id), error=str(error))
    except ProviderAccountRefused as error:
        # The account's fault, not the number's: nobody was dialed, and the participant waits
        # for the account to be fixed (or for the settle deadline).
        participant.dial_state = DialState.PENDING
        participant.dial_started_at = None
        _account_refused(deps, error)
    except ProviderRejected as error:
        participant.dial_state = DialState.REJECTED
        participant.rejection_reason = str(error)[:300]
        log.warning("dial_rejected", conference_id=str(conference.id), error=str(error))


def _account_refused(deps: WorkerDeps, error: ProviderAccountRefused) -> float:
    """Pause the dialer for the whole account; how long for."""
    seconds = deps.account.trip(deps.clock(), str(error)[:300])
    metrics.PROVIDER_ACCOUNT_PAUSED.set(1)
    metrics.PROVIDER_ACCOUNT_REFUSALS.labels(kind=type(error).__name__).inc()
    log.error(
        "provider_account_refused",
        kind=type(error).__name__,
        error=str(error)[:300],
        paused_seconds=seconds,
    )
    return seconds


def _account_works(deps: WorkerDeps) -> None:
    if deps.account.clear():
        metrics.PROVIDER_ACCOUNT_PAUSED.set(0)
        log.info("provider_account_recovered")


async def _resolve_unknown_dials(
    deps: WorkerDeps, conference: Conference, not_after: datetime
) -> bool:
    """Settle `dialing` participants from the provider's call list once no request for them
    can still be on its way (their booked time plus the dial deadline). A number the provider
    lists is a number that was dialed, with or without a call id. Returns False when the
    conference was rescheduled and the caller must stop."""
    now = deps.clock()
    grace = timedelta(seconds=deps.timing.dial_grace)
    waiting = [
        p.dial_started_at + grace
        for p in conference.participants
        if p.dial_state is DialState.DIALING
        and p.dial_started_at is not None
        and now < p.dial_started_at + grace
    ]
    if waiting:
        # Dialing the others meanwhile would be safe, but waiting keeps the protocol simple and
        # the grace period is short.
        await deps.store.save(conference, [], max((max(waiting) - now).total_seconds(), 0.5))
        return False
    assert conference.provider_conference_id is not None
    slot = _book_one(deps, not_after, Urgency.POLL)
    if slot is None:
        await deps.store.save(conference, [], deps.budget.seconds_until_free())
        return False
    try:
        report = await _read_conference(deps, conference, slot)
    except ProviderError as error:
        log.warning("dial_resolution_deferred", conference_id=str(conference.id), error=str(error))
        await deps.store.save(conference, [], _retry_delay(deps))
        return False
    for participant in conference.participants:
        if participant.dial_state is not DialState.DIALING:
            continue
        call = match_call(participant, report.calls)
        if call is not None:
            participant.provider_call_id = call.call_id or participant.provider_call_id
            participant.dial_state = DialState.DIALED
            metrics.DIAL_RESOLUTIONS.labels(outcome="placed").inc()
            log.info(
                "dial_resolved_as_placed", conference_id=str(conference.id), call_id=call.call_id
            )
        else:
            participant.dial_state = DialState.PENDING
            participant.dial_started_at = None
            metrics.DIAL_RESOLUTIONS.labels(outcome="not_placed").inc()
            log.info("dial_resolved_as_not_placed", conference_id=str(conference.id))
    return await deps.store.save(conference, [], deps.timing.lease, hold=True)


async def _read_conference(
    deps: WorkerDeps, conference: Conference, slot: datetime
) -> ConferenceReport:
    """The provider's view of the conference. When its answer cannot list every call (the flat
    shape shows only the latest) and a dialed participant is missing from it, the calls report
    around the room's creation fills in the rest: a call the provider placed is never taken
    for one it did not, and every call settles from the provider's own figures."""
    assert conference.provider_conference_id is not None
    report = await deps.provider.get_conference(conference.provider_conference_id, at=slot)
    if report.lists_every_call:
        return report
    unsettled = [
        p
        for p in conference.participants
        if p.dial_state in (DialState.DIALING, DialState.DIALED) and not p.is_settled
    ]
    # Missing from the answer, or about to be billed without the id that names its call (the
    # one a dial answered may not be it).
    wanting = [
        p
        for p in unsettled
        if (call := match_call(p, report.calls)) is None
        or (call.is_settled and call.call_id is None)
    ]
    if not wanting:
        return report
    # The provider's own clock dates the window: ours may differ from it.
    start = (report.created_at or conference.accepted_at) - timedelta(minutes=5)
    end = start + timedelta(seconds=deps.timing.settle_deadline + 3600)
    calls = await deps.provider.calls_report(start, end)
    ours = tuple(c for c in calls if c.conference_id == conference.provider_conference_id)
    log.info("conference_calls_read_from_report", conference_id=str(conference.id), calls=len(ours))
    known = {(c.call_id, c.number) for c in ours}
    shown = tuple(c for c in report.calls if (c.call_id, c.number) not in known)
    return dataclasses.replace(report, calls=ours + shown)


def _booking_deadline(deps: WorkerDeps) -> datetime:
    """The latest moment a step may book a request for: half a lease from its start, so that
    its requests have gone (and its marks are committed) well before the claim could lapse."""
    return deps.clock() + timedelta(seconds=deps.timing.lease / 2)


def _book_one(deps: WorkerDeps, not_after: datetime, urgency: Urgency) -> datetime | None:
    slots = deps.budget.book(1, not_after, urgency)
    return slots[0] if slots else None


def _poll_urgency(deps: WorkerDeps, conference: Conference) -> Urgency:
    """A poll yields to dials and creates, until it has waited its backoff cap: then it goes
    ahead, so that a busy budget never starves a conference of its polls."""
    if conference.due_at is None:
        return Urgency.POLL
    waited = (deps.clock() - conference.due_at).total_seconds()
    return Urgency.DIAL if waited >= deps.timing.poll_max else Urgency.POLL


async def _end_at_provider(deps: WorkerDeps, conference: Conference) -> None:
    assert conference.provider_conference_id is not None
    # An end books ahead of polls when the near future has room; else it takes its turn.
    slot = _book_one(deps, _booking_deadline(deps), Urgency.END)
    try:
        await deps.provider.end_conference(conference.provider_conference_id, at=slot)
    except ProviderError as error:
        log.warning("provider_end_failed", conference_id=str(conference.id), error=str(error))


async def poll_conference(deps: WorkerDeps, conference: Conference) -> None:
    """Read the conference at the provider, record what changed, and finish it once every
    participant is settled; otherwise look again later, less often each time."""
    assert conference.provider_conference_id is not None
    if _past_deadline(deps, conference, grace=deps.timing.lease):
        # Polls past the deadline finish it below; reaching here means they keep failing
        # before that point (a bug, an answer that cannot be read): stop trying.
        await _finish(deps, conference, ConferenceStatus.UNRESOLVED, "not settled by the deadline")
        return
    if any(p.dial_state in _NOT_DIALED for p in conference.participants):
        await _dial_added(deps, conference)
        return
    slot = _book_one(deps, _booking_deadline(deps), _poll_urgency(deps, conference))
    if slot is None:
        await deps.store.save(conference, [], deps.budget.seconds_until_free())
        return
    conference.poll_count += 1
    try:
        report = await _read_conference(deps, conference, slot)
    except ProviderError as error:
        log.warning("poll_failed", conference_id=str(conference.id), error=str(error))
        if _past_deadline(deps, conference):
            await _finish(deps, conference, ConferenceStatus.UNRESOLVED, f"poll failed: {error}")
        else:
            await deps.store.save(conference, [], _next_poll(deps, conference))
        return

    now = deps.clock()
    events: list[PendingEvent] = []
    for participant in conference.participants:
        if participant.is_settled or participant.dial_state is not DialState.DIALED:
            continue
        call = match_call(participant, report.calls)
        if call is None:
            continue
        if call.price is not None and not storable_price(call.price):
            # The ledger would round it: the call stays unsettled (and the conference ends
            # unresolved at its deadline) rather than be billed at a price the provider did
            # not send.
            metrics.PRICES_REFUSED.labels(source="poll").inc()
            log.error(
                "price_refused",
                conference_id=str(conference.id),
                position=participant.position,
                price=str(call.price),
            )
            continue
        if not is_known_call_status(call.status):
            log.warning("unknown_call_status", conference_id=str(conference.id), status=call.status)
        changed = call.status != participant.provider_status
        # The call list is the source of truth for the call's id (the one its reports and
        # webhooks use): a dial answered without one, or with another, takes the listed one.
        participant.provider_call_id = call.call_id or participant.provider_call_id
        participant.provider_status = call.status
        participant.started_at = call.started_at or participant.started_at
        participant.duration_seconds = call.duration_seconds
        participant.billed_seconds = call.billed_seconds
        participant.talk_seconds = call.talk_seconds
        participant.price = call.billed_price
        participant.recording_url = call.recording_url
        if call.is_settled:
            participant.settled_at = now
        if changed:
            # The change's number is part of its id: a status that returns (A -> B -> A) is a
            # new change, while the same change computed again (a redelivery, a retried poll
            # whose save was fenced) keeps its id.
            participant.status_changes += 1
            events.append(
                PendingEvent(
                    event_id=event_id(
                        conference.id,
                        EventType.PARTICIPANT_STATUS_CHANGED,
                        str(participant.position),
                        str(participant.status_changes),
                        call.status or "",
                    ),
                    type=EventType.PARTICIPANT_STATUS_CHANGED,
                    occurred_at=now,
                    data={"participant": participant_snapshot(participant)},
                )
            )

    if conference.all_settled and conference.expects_participants:
        # An add answered 202 is on its way to us: the room stays open for it.
        await deps.store.save(conference, events, _retry_delay(deps))
        return
    if conference.all_settled:
        if report.is_open:
            await _end_at_provider(deps, conference)
        conference.provider_ended_at = report.ended_at or now
        await _finish(deps, conference, outcome_when_settled(conference), None, events)
        return
    if _past_deadline(deps, conference):
        await _finish(
            deps, conference, ConferenceStatus.UNRESOLVED, "not settled by the deadline", events
        )
        return
    canceled = conference.cancel_requested_at is not None
    if report.is_open and (canceled or _past_max_duration(deps, conference)):
        log.info("conference_ending", conference_id=str(conference.id), canceled=canceled)
        await _end_at_provider(deps, conference)
    await deps.store.save(conference, events, _next_poll(deps, conference))


async def _finish(
    deps: WorkerDeps,
    conference: Conference,
    status: ConferenceStatus,
    reason: str | None,
    events: list[PendingEvent] | None = None,
) -> None:
    """Final state, billing and the final event, written together."""
    conference.status = status
    conference.failure_reason = reason
    conference.finalized_at = deps.clock()
    final = PendingEvent(
        event_id=event_id(conference.id, _FINAL_EVENT[status]),
        type=_FINAL_EVENT[status],
        occurred_at=conference.finalized_at,
        data=billing_snapshot(conference),
    )
    if status is ConferenceStatus.UNRESOLVED:
        log.error("conference_unresolved", conference_id=str(conference.id), reason=reason)
    if await deps.store.save(conference, [*(events or []), final], None):
        failpoints.reached("after_settle")
        metrics.CONFERENCES_FINALIZED.labels(status=status.value).inc()
        metrics.POLLS_PER_CONFERENCE.observe(conference.poll_count)
        metrics.TIME_TO_FINAL.observe(
            (conference.finalized_at - conference.accepted_at).total_seconds()
        )
        log.info(
            "conference_finalized",
            conference_id=str(conference.id),
            status=status.value,
            polls=conference.poll_count,
        )


def _next_poll(deps: WorkerDeps, conference: Conference) -> float:
    """Backoff from the first poll; with webhooks, only a slow safety net, because each
    callback makes the conference due at once."""
    t = deps.timing
    if t.webhooks:
        return next_poll_delay(0, t.poll_safety, t.poll_safety, deps.random())
    return next_poll_delay(conference.poll_count, t.poll_first, t.poll_max, deps.random())


def _retry_delay(deps: WorkerDeps) -> float:
    return next_poll_delay(0, deps.timing.poll_first, deps.timing.poll_max, deps.random())


def _past_deadline(deps: WorkerDeps, conference: Conference, grace: float = 0.0) -> bool:
    limit = timedelta(seconds=deps.timing.settle_deadline + grace)
    return deps.clock() - conference.accepted_at > limit


def _past_max_duration(deps: WorkerDeps, conference: Conference) -> bool:
    limit = conference.max_duration_seconds or deps.timing.default_max_duration
    return deps.clock() - conference.accepted_at > timedelta(seconds=limit)


@dataclass(frozen=True)
class ReconcileDeps:
    ledger: ReconcileLedger
    provider: ProviderClient
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class ReconcileRun:
    run_id: int
    # The report the run compared with, named on each adjustment it appends.
    source: str


@dataclass
class ReconcileResult:
    run_id: int
    source: str = ""
    provider_conferences: int = 0
    findings: list[Finding] = field(default_factory=list)
    compared: int = 0
    exact: int = 0
    adjusted: Counter[str] = field(default_factory=Counter)
    calls_added: int = 0
    missing_at_provider: int = 0
    events: int = 0
    total_before: Decimal = Decimal(0)
    total_after: Decimal = Decimal(0)

    @property
    def discrepancies(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in DISCREPANCY_KINDS]

    @property
    def foreign(self) -> int:
        return sum(f.kind == "unknown_conference" for f in self.findings)

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for finding in self.findings:
            kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
        return {
            "source": self.source,
            "provider_conferences": self.provider_conferences,
            "discrepancies": len(self.discrepancies),
            "findings": kinds,
            "conferences_compared": self.compared,
            "conferences_exact": self.exact,
            "adjustments": {name: self.adjusted[name] for name in ADJUSTABLE_FIELDS},
            "missing_in_ledger": self.calls_added,
            "missing_at_provider": self.missing_at_provider,
            "foreign_conferences": self.foreign,
            "unstorable_prices": kinds.get("unstorable_price", 0),
            "events": self.events,
            "totals": {
                "before": money(self.total_before),
                "after": money(self.total_after),
                "currency": "BRL",
            },
        }

    def report(self) -> str:
        """The summary as a table a person reads."""
        rows = [
            ("provider conferences in the report", str(self.provider_conferences)),
            ("conferences compared", str(self.compared)),
            ("conferences exact", str(self.exact)),
            *((f"adjusted {name}", str(self.adjusted[name])) for name in ADJUSTABLE_FIELDS),
            ("calls missing in the ledger (added)", str(self.calls_added)),
            ("calls missing at the provider", str(self.missing_at_provider)),
            ("foreign conferences", str(self.foreign)),
            ("prices refused (not storable exactly)", str(self.summary()["unstorable_prices"])),
            ("events published", str(self.events)),
            ("total BRL before", money(self.total_before) or ""),
            ("total BRL after", money(self.total_after) or ""),
            ("discrepancies", str(len(self.discrepancies))),
        ]
        width = max(len(label) for label, _ in rows)
        figures = max(len(value) for _, value in rows)
        lines = [f"reconcile run {self.run_id}: {self.source}"]
        lines += [f"  {label:<{width}}  {value:>{figures}}" for label, value in rows]
        return "\n".join(lines)


# Findings that mean the ledger was wrong or incomplete; the rest are informational.
# A busy conference was not checked at all: it counts, so the run does not pass for clean.
DISCREPANCY_KINDS = frozenset(
    {
        "price_mismatch",
        "duration_mismatch",
        "missing_call",
        "missing_at_provider",
        "settled_late",
        "unknown_conference",
        "unstorable_price",
        "busy",
    }
)


async def reconcile_period(deps: ReconcileDeps, start: datetime, end: datetime) -> ReconcileResult:
    """Compare the provider's report for a period with the ledger and make the ledger right:
    settle what we left unsettled, append an adjustment for each price or duration that
    differs, add billed calls we missed (each change published as `conference.reconciled`),
    and report conferences we never made. Nothing already in the ledger is overwritten."""
    run = ReconcileRun(
        await deps.ledger.start_reconcile_run(start, end),
        f"totalvoice conference report {start.isoformat()}/{end.isoformat()}",
    )
    result = ReconcileResult(run_id=run.run_id, source=run.source)
    try:
        reports = await deps.provider.conference_report(start, end)
    except ProviderError as error:
        await deps.ledger.finish_reconcile_run(
            result.run_id, "failed", {"error": str(error)[:300]}, []
        )
        raise
    result.provider_conferences = len(reports)
    for report in reports:
        outcome = await _reconcile_conference(deps, run, report)
        result.findings.extend(outcome.findings)
        if outcome.compared:
            result.compared += 1
            result.exact += not outcome.findings
            result.adjusted.update(a.field for a in outcome.adjustments)
            result.calls_added += outcome.calls_added
            result.missing_at_provider += outcome.missing_at_provider
            result.events += outcome.events
            result.total_before += outcome.total_before
            result.total_after += outcome.total_after
    outcome_name = "discrepancies" if result.discrepancies else "clean"
    await deps.ledger.finish_reconcile_run(
        result.run_id, outcome_name, result.summary(), result.findings, result.report()
    )
    return result


# Reconcile holds a conference only while it compares it in memory (no provider call between
# its claim and its save), so a short lease is plenty; a lost one is retried this many times.
RECONCILE_LEASE_SECONDS = 30.0
RECONCILE_ATTEMPTS = 3


@dataclass
class ConferenceReconciled:
    """What reconciling one provider conference found and wrote."""

    findings: list[Finding] = field(default_factory=list)
    compared: bool = False
    adjustments: list[Adjustment] = field(default_factory=list)
    calls_added: int = 0
    missing_at_provider: int = 0
    events: int = 0
    total_before: Decimal = Decimal(0)
    total_after: Decimal = Decimal(0)


async def _reconcile_conference(
    deps: ReconcileDeps, run: ReconcileRun, report: ConferenceReport
) -> ConferenceReconciled:
    provider_id = report.provider_conference_id
    conference_id = None
    for _ in range(RECONCILE_ATTEMPTS):
        conference, ours = await deps.ledger.claim_for_reconcile(
            provider_id, RECONCILE_LEASE_SECONDS
        )
        if conference is None:
            if ours:
                return ConferenceReconciled([_busy(provider_id, None, "a worker holds it")])
            return ConferenceReconciled(_unknown_conference(report))
        conference_id = conference.id
        adjustments = await deps.ledger.adjustments(conference.id)
        outcome, events, next_action = _corrections(
            run, report, conference, adjustments, deps.clock()
        )
        # Fenced by the claim: False means another claim took it and nothing was written.
        if await deps.ledger.save_reconciliation(
            conference, outcome.adjustments, events, next_action
        ):
            outcome.events = len(events)
            return outcome
    return ConferenceReconciled([_busy(provider_id, conference_id, "its claim was taken")])


def _busy(provider_id: str, conference_id: UUID | None, why: str) -> Finding:
    """A conference this run could not check or correct: reported, and left for the next run."""
    return Finding("busy", provider_id, None, conference_id, {"note": f"{why}; not reconciled"})


def _unknown_conference(report: ConferenceReport) -> list[Finding]:
    billed = [c for c in report.calls if c.call_id is not None]
    # An empty conference is what a crash between create and storing its id leaves behind:
    # it cost nothing. One with calls is a conference someone else placed on our account.
    kind = "unknown_conference" if billed else "unknown_empty_conference"
    return [
        Finding(
            kind,
            report.provider_conference_id,
            detail={
                "calls": len(billed),
                "price": money(sum((c.price or Decimal(0) for c in billed), Decimal(0))),
            },
        )
    ]


def _billed_total(conference: Conference, adjustments: list[Adjustment]) -> Decimal:
    return sum(
        (
            p.price or Decimal(0)
            for p in current_conference(conference, adjustments).participants
            if p.provider_call_id is not None
        ),
        Decimal(0),
    )


def _corrections(
    run: ReconcileRun,
    report: ConferenceReport,
    conference: Conference,
    adjustments: list[Adjustment],
    now: datetime,
) -> tuple[ConferenceReconciled, list[PendingEvent], float | None]:
    """Make the claimed conference match the provider's report without rewriting what it has
    billed: what it found and appends, the events to publish, and its next step."""
    outcome = ConferenceReconciled(
        compared=True, total_before=_billed_total(conference, adjustments)
    )
    known = list(adjustments)
    seen: set[int] = set()
    added: list[Participant] = []
    for call in report.calls:
        participant = match_call_for_reconcile(conference, call)
        if participant is not None:
            seen.add(participant.position)
        if call.price is not None and not storable_price(call.price):
            outcome.findings.append(_unstorable(conference, call))
            continue
        if participant is None:
            if call.call_id is None or not call.is_settled:
                continue
            participant = Participant(
                position=max((p.position for p in conference.participants), default=-1) + 1,
                number=call.number or "",
                caller_id=None,
                record=False,
                dial_state=DialState.DIALED,
                provider_call_id=call.call_id,
                source="reconcile",
                reconciled_at=now,
            )
            conference.participants.append(participant)
            seen.add(participant.position)
            _settle(participant, call, now)
            added.append(participant)
            outcome.findings.append(_finding("missing_call", conference, call))
            continue
        if participant.settled_at is None:
            # Its first settlement: these are the original figures, not a correction.
            if call.is_settled:
                _settle(participant, call, now)
            continue
        changed = _adjustments(run, conference, participant, call, known, now)
        if changed:
            known.extend(changed)
            outcome.adjustments.extend(changed)
            kind = "price_mismatch" if any(a.field == "price" for a in changed) else None
            outcome.findings.append(
                _finding(
                    kind or "duration_mismatch",
                    conference,
                    call,
                    {a.field: [a.before, a.after] for a in changed},
                )
            )
    if report.lists_every_call:
        for p in conference.participants:
            if p.provider_call_id is not None and p.settled_at and p.position not in seen:
                outcome.missing_at_provider += 1
                outcome.findings.append(
                    Finding(
                        "missing_at_provider",
                        conference.provider_conference_id,
                        p.provider_call_id,
                        conference.id,
                        {"number": p.number, "price": money(p.price)},
                    )
                )
    outcome.calls_added = len(added)
    outcome.total_after = _billed_total(conference, known)

    billing = billing_snapshot(current_conference(conference, known))
    events: list[PendingEvent] = []
    if not conference.status.is_final and conference.all_settled:
        outcome.findings.append(
            Finding("settled_late", report.provider_conference_id, None, conference.id)
        )
        conference.status = outcome_when_settled(conference)
        conference.finalized_at = now
        conference.provider_ended_at = report.ended_at or now
        billing = billing_snapshot(current_conference(conference, known))
        events.append(
            PendingEvent(
                event_id(conference.id, _FINAL_EVENT[conference.status]),
                _FINAL_EVENT[conference.status],
                now,
                billing,
            )
        )
    # Still open at the provider: the poller carries on from here.
    next_action = None if conference.status.is_final else 0.0
    numbers = {p.position: p.number for p in conference.participants}
    for participant in added:
        events.append(
            PendingEvent(
                event_id(
                    conference.id, EventType.RECONCILED, "call_added", str(participant.position)
                ),
                EventType.RECONCILED,
                now,
                {
                    "kind": "call_added",
                    "run_id": run.run_id,
                    "source": run.source,
                    "participant": participant_snapshot(participant),
                    "billing": billing,
                },
            )
        )
    for adjustment in outcome.adjustments:
        events.append(
            PendingEvent(
                adjustment.event_id,
                EventType.RECONCILED,
                now,
                {
                    "kind": "adjustment",
                    "run_id": run.run_id,
                    "source": run.source,
                    "adjustment": adjustment.wire(numbers[adjustment.position]),
                    "billing": billing,
                },
            )
        )
    return outcome, events, next_action


def _adjustments(
    run: ReconcileRun,
    conference: Conference,
    participant: Participant,
    call: CallReport,
    known: list[Adjustment],
    now: datetime,
) -> list[Adjustment]:
    """One adjustment per billed field whose current value the provider reports otherwise."""
    billed_now = current(participant, known)
    reported: dict[AdjustableField, Decimal | int | None] = {
        "price": call.billed_price,
        "billed_seconds": call.billed_seconds,
        "duration_seconds": call.duration_seconds,
        "talk_seconds": call.talk_seconds,
    }
    changed = []
    for name in ADJUSTABLE_FIELDS:
        ours, theirs = field_value(billed_now, name), reported[name]
        if theirs is None or ours == theirs:
            continue
        after = as_text(name, theirs)
        assert after is not None
        earlier = sum(1 for a in known if a.position == participant.position and a.field == name)
        changed.append(
            Adjustment(
                conference_id=conference.id,
                position=participant.position,
                provider_call_id=participant.provider_call_id or call.call_id,
                field=name,
                ordinal=earlier + 1,
                before=as_text(name, ours),
                after=after,
                source=run.source,
                run_id=run.run_id,
                created_at=now,
            )
        )
    return changed


def _unstorable(conference: Conference, call: CallReport) -> Finding:
    """A price the ledger could only hold rounded: refused loudly, and nothing of the call is
    written until someone looks (each run reports it again)."""
    log.error(
        "price_not_storable",
        conference_id=str(conference.id),
        provider_call_id=call.call_id,
        price=str(call.price),
    )
    metrics.PRICES_REFUSED.labels(source="reconcile").inc()
    return Finding(
        "unstorable_price",
        conference.provider_conference_id,
        call.call_id,
        conference.id,
        {"number": call.number, "price": str(call.price)},
    )


def match_call_for_reconcile(conference: Conference, call: CallReport) -> Participant | None:
    """The participant a reported call belongs to, by the poller's rule (`match_call`) seen from
    the call: a participant whose call id it carries first, else the one whose number it is."""
    by_id = [
        p
        for p in conference.participants
        if call.call_id is not None and p.provider_call_id == call.call_id
    ]
    if by_id:
        return by_id[0]
    return next((p for p in conference.participants if match_call(p, (call,)) is call), None)


def _settle(participant: Participant, call: CallReport, now: datetime) -> None:
    """A call's first billed figures: written once, corrected afterwards only by adjustments."""
    participant.provider_status = call.status or participant.provider_status
    participant.started_at = call.started_at or participant.started_at
    participant.duration_seconds = call.duration_seconds
    participant.billed_seconds = call.billed_seconds
    participant.talk_seconds = call.talk_seconds
    participant.price = call.billed_price
    participant.recording_url = call.recording_url or participant.recording_url
    if call.is_settled and participant.settled_at is None:
        participant.settled_at = now


def _finding(
    kind: str, conference: Conference, call: CallReport, detail: dict[str, Any] | None = None
) -> Finding:
    return Finding(
        kind,
        conference.provider_conference_id,
        call.call_id,
        conference.id,
        detail or {"number": call.number, "price": money(call.billed_price)},
    )
