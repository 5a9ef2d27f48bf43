"""The use cases, one function each: accept a command, dial a conference's participants, poll it
until every call is settled, and finish it. They await only the ports they are given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.domain.commands import ConferenceCommand
from service.domain.conference import (
    Conference,
    ConferenceStatus,
    DialState,
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
    participant_snapshot,
)
from service.logging import get_logger
from service.ports import (
    ConferenceStore,
    DialOutcomeUnknown,
    ProviderClient,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)

log = get_logger(__name__)

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


@dataclass(frozen=True)
class WorkerDeps:
    store: ConferenceStore
    provider: ProviderClient
    timing: Timing
    clock: Callable[[], datetime]
    random: Callable[[], float]


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

    Every participant is marked `dialing`, committed, before the provider is asked to dial it:
    a crash or a lost answer then leaves a visible unknown outcome, which is resolved from the
    provider's call list after a grace period instead of by dialing again.
    """
    store, provider, timing = deps.store, deps.provider, deps.timing
    if conference.provider_conference_id is None:
        try:
            conference.provider_conference_id = await provider.create_conference()
        except ProviderUnavailable as error:
            log.warning(
                "provider_create_deferred", conference_id=str(conference.id), error=str(error)
            )
            await store.save(conference, [], _retry_delay(deps, conference))
            return
        except ProviderError as error:
            await _finish(deps, conference, ConferenceStatus.FAILED, f"create refused: {error}")
            return
        conference.status = ConferenceStatus.DIALING
        if not await store.save(conference, [], timing.lease, hold=True):
            return

    unknown = any(p.dial_state is DialState.DIALING for p in conference.participants)
    if unknown and not await _resolve_unknown_dials(deps, conference):
        return

    for participant in conference.participants:
        if participant.dial_state is not DialState.PENDING:
            continue
        participant.dial_state = DialState.DIALING
        participant.dial_started_at = deps.clock()
        if not await store.save(conference, [], timing.lease, hold=True):
            return
        try:
            participant.provider_call_id = await provider.add_participant(
                conference.provider_conference_id,
                participant.number,
                participant.caller_id,
                participant.record,
            )
            participant.dial_state = DialState.DIALED
        except DialOutcomeUnknown as error:
            log.warning(
                "dial_outcome_unknown",
                conference_id=str(conference.id),
                position=participant.position,
                error=str(error),
            )
        except ProviderUnavailable as error:
            # Refused before it was processed (429, no connection): nobody was dialed.
            participant.dial_state = DialState.PENDING
            participant.dial_started_at = None
            log.warning("dial_deferred", conference_id=str(conference.id), error=str(error))
            await store.save(conference, [], _retry_delay(deps, conference))
            return
        except ProviderRejected as error:
            participant.dial_state = DialState.REJECTED
            participant.rejection_reason = str(error)[:300]
            log.warning("dial_rejected", conference_id=str(conference.id), error=str(error))
        if not await store.save(conference, [], timing.lease, hold=True):
            return

    if any(p.dial_state is DialState.DIALING for p in conference.participants):
        await store.save(conference, [], timing.dial_grace)
        return
    if all(p.dial_state is DialState.REJECTED for p in conference.participants):
        await _finish(deps, conference, ConferenceStatus.FAILED, "every dial was refused")
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
    await store.save(conference, [dialed], timing.poll_first)


async def _resolve_unknown_dials(deps: WorkerDeps, conference: Conference) -> bool:
    """Settle `dialing` participants from the provider's call list once the grace period is over.
    Returns False when the conference was rescheduled and the caller must stop."""
    now = deps.clock()
    grace = timedelta(seconds=deps.timing.dial_grace)
    waiting = [
        p
        for p in conference.participants
        if p.dial_state is DialState.DIALING
        and p.dial_started_at is not None
        and now - p.dial_started_at < grace
    ]
    if waiting:
        # Dialing the others meanwhile would be safe, but waiting keeps the protocol simple and
        # the grace period is short.
        assert waiting[0].dial_started_at is not None
        remaining = (waiting[0].dial_started_at + grace - now).total_seconds()
        await deps.store.save(conference, [], max(remaining, 0.5))
        return False
    assert conference.provider_conference_id is not None
    try:
        report = await deps.provider.get_conference(conference.provider_conference_id)
    except ProviderError as error:
        log.warning("dial_resolution_deferred", conference_id=str(conference.id), error=str(error))
        await deps.store.save(conference, [], _retry_delay(deps, conference))
        return False
    for participant in conference.participants:
        if participant.dial_state is not DialState.DIALING:
            continue
        call = match_call(participant, report.calls)
        if call is not None and call.call_id is not None:
            participant.provider_call_id = call.call_id
            participant.dial_state = DialState.DIALED
            log.info(
                "dial_resolved_as_placed", conference_id=str(conference.id), call_id=call.call_id
            )
        else:
            participant.dial_state = DialState.PENDING
            participant.dial_started_at = None
            log.info("dial_resolved_as_not_placed", conference_id=str(conference.id))
    return await deps.store.save(conference, [], deps.timing.lease, hold=True)


async def poll_conference(deps: WorkerDeps, conference: Conference) -> None:
    """Read the conference at the provider, record what changed, and finish it once every
    participant is settled; otherwise look again later, less often each time."""
    assert conference.provider_conference_id is not None
    conference.poll_count += 1
    try:
        report = await deps.provider.get_conference(conference.provider_conference_id)
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
        if not is_known_call_status(call.status):
            log.warning("unknown_call_status", conference_id=str(conference.id), status=call.status)
        changed = call.status != participant.provider_status
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
            events.append(
                PendingEvent(
                    event_id=event_id(
                        conference.id,
                        EventType.PARTICIPANT_STATUS_CHANGED,
                        str(participant.position),
                        call.status or "",
                    ),
                    type=EventType.PARTICIPANT_STATUS_CHANGED,
                    occurred_at=now,
                    data={"participant": participant_snapshot(participant)},
                )
            )

    if conference.all_settled:
        if report.is_open:
            try:
                await deps.provider.end_conference(conference.provider_conference_id)
            except ProviderError as error:
                log.warning(
                    "provider_end_failed", conference_id=str(conference.id), error=str(error)
                )
        conference.provider_ended_at = report.ended_at or now
        await _finish(deps, conference, outcome_when_settled(conference), None, events)
        return
    if _past_deadline(deps, conference):
        await _finish(
            deps, conference, ConferenceStatus.UNRESOLVED, "not settled by the deadline", events
        )
        return
    if report.is_open and _past_max_duration(deps, conference):
        log.info("conference_max_duration_reached", conference_id=str(conference.id))
        try:
            await deps.provider.end_conference(conference.provider_conference_id)
        except ProviderError as error:
            log.warning("provider_end_failed", conference_id=str(conference.id), error=str(error))
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
        log.info(
            "conference_finalized",
            conference_id=str(conference.id),
            status=status.value,
            polls=conference.poll_count,
        )


def _next_poll(deps: WorkerDeps, conference: Conference) -> float:
    t = deps.timing
    return next_poll_delay(conference.poll_count - 1, t.poll_first, t.poll_max, deps.random())


def _retry_delay(deps: WorkerDeps, conference: Conference) -> float:
    return next_poll_delay(0, deps.timing.poll_first, deps.timing.poll_max, deps.random())


def _past_deadline(deps: WorkerDeps, conference: Conference) -> bool:
    return deps.clock() - conference.accepted_at > timedelta(seconds=deps.timing.settle_deadline)


def _past_max_duration(deps: WorkerDeps, conference: Conference) -> bool:
    limit = conference.max_duration_seconds or deps.timing.default_max_duration
    return deps.clock() - conference.accepted_at > timedelta(seconds=limit)
