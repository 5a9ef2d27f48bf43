"""Conference and participant state, and the rules that move them: when a call is settled,
how a conference ends, when to look again."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID


class ConferenceStatus(StrEnum):
    ACCEPTED = "accepted"
    DIALING = "dialing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    UNRESOLVED = "unresolved"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_CONFERENCE


_FINAL_CONFERENCE = {
    ConferenceStatus.COMPLETED,
    ConferenceStatus.FAILED,
    ConferenceStatus.CANCELED,
    ConferenceStatus.UNRESOLVED,
}


class DialState(StrEnum):
    """Where a participant stands in the dial protocol (guarantee 2: no double dial).

    `dialing` is committed *before* the provider is asked to dial, so a participant found in
    `dialing` after a crash or a timeout has an unknown outcome and must be resolved from the
    provider's call list, never dialed again blindly.
    """

    PENDING = "pending"
    DIALING = "dialing"
    DIALED = "dialed"
    REJECTED = "rejected"


ANSWERED = "atendida"
FINAL_CALL_STATUSES = frozenset(
    {ANSWERED, "sem resposta", "ocupado", "congestionado", "falha", "cancelada", "não existe"}
)
IN_PROGRESS_CALL_STATUSES = frozenset({"preparando", "chamando"})


def is_known_call_status(status: str | None) -> bool:
    return status is None or status in FINAL_CALL_STATUSES or status in IN_PROGRESS_CALL_STATUSES


class AdditionRefused(StrEnum):
    """Why a conference takes no new participant. The api answers these as 404, 409 or 422;
    a command produced straight to Kafka goes to the DLQ with the reason."""

    UNKNOWN_CONFERENCE = "unknown-conference"
    NOT_READY = "conference-not-ready"
    FINAL = "conference-final"
    CANCELED = "conference-canceled"
    PAST_MAX_DURATION = "conference-past-max-duration"
    ROOM_ENDED = "conference-room-ended"
    DUPLICATE_NUMBER = "duplicate-number"
    FULL = "conference-full"


@dataclass(frozen=True)
class CallReport:
    """What the provider says of one call, in the service's own words and types."""

    call_id: str | None
    number: str | None
    status: str | None
    started_at: datetime | None = None
    duration_seconds: int | None = None
    billed_seconds: int | None = None
    talk_seconds: int | None = None
    price: Decimal | None = None
    recording_url: str | None = None
    conference_id: str | None = None

    @property
    def is_settled(self) -> bool:
        """Final, and billed if answered: an answered call's seconds and price arrive only when
        it ends, and a ledger row without them would bill nothing."""
        if self.status not in FINAL_CALL_STATUSES:
            return False
        if self.status == ANSWERED:
            return self.billed_seconds is not None and self.price is not None
        return True

    @property
    def billed_price(self) -> Decimal | None:
        """The price to record: the provider's, or zero for a settled call it did not bill."""
        if self.price is None and self.is_settled and self.status != ANSWERED:
            return Decimal("0")
        return self.price


@dataclass(frozen=True)
class ConferenceReport:
    """The provider's view of one conference (`GET /conferencia/{id}`)."""

    provider_conference_id: str
    created_at: datetime | None
    ended_at: datetime | None
    calls: tuple[CallReport, ...] = ()
    # False when the answer cannot list every call: the flat, audio-like shape shows one call
    # (the latest) and never the end of the room.
    lists_every_call: bool = True

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


@dataclass
class Participant:
    position: int
    number: str
    caller_id: str | None
    record: bool
    dial_state: DialState = DialState.PENDING
    dial_started_at: datetime | None = None
    provider_call_id: str | None = None
    provider_status: str | None = None
    started_at: datetime | None = None
    duration_seconds: int | None = None
    billed_seconds: int | None = None
    talk_seconds: int | None = None
    price: Decimal | None = None
    recording_url: str | None = None
    settled_at: datetime | None = None
    rejection_reason: str | None = None
    source: str = "command"
    reconciled_at: datetime | None = None
    # How many times the provider's status for this call has changed: it names each change.
    status_changes: int = 0
    # The add that made this participant (None for those the conference was created with).
    command_id: UUID | None = None

    @property
    def is_settled(self) -> bool:
        return self.dial_state is DialState.REJECTED or self.settled_at is not None


@dataclass
class Conference:
    id: UUID
    command_id: UUID
    caller: str
    idempotency_key: str
    status: ConferenceStatus
    reference: str | None
    metadata: dict[str, str]
    max_duration_seconds: int | None
    accepted_at: datetime
    provider_conference_id: str | None = None
    poll_count: int = 0
    claim_token: UUID | None = None
    provider_ended_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    finalized_at: datetime | None = None
    failure_reason: str | None = None
    participants: list[Participant] = field(default_factory=list)
    # When its step came due (known once claimed): how long a poll has waited for its turn.
    due_at: datetime | None = None
    # Positions taken, by participants and by adds the api answered 202 for that the consumer
    # has not accepted yet (known once claimed): while more are taken than are here, one is on
    # its way, and the conference must not end.
    participant_count: int | None = None
    # The W3C traceparent of the command that asked for it (None when tracing is off): each
    # later step, and the publish of each event, is linked to that trace.
    trace_parent: str | None = None

    @property
    def expects_participants(self) -> bool:
        return self.participant_count is not None and self.participant_count > len(
            self.participants
        )

    @property
    def all_settled(self) -> bool:
        return all(p.is_settled for p in self.participants)


def match_call(participant: Participant, calls: Sequence[CallReport]) -> CallReport | None:
    """The provider's call for this participant: by call id when both sides have one and they
    agree, else by number. Numbers are distinct within a conference and the provider adapter
    gives them in E.164 whatever form the provider echoed, so a number identifies the call even
    where the provider's ids disagree (the id a dial answered is not always the id of the call
    listed) or are missing (the flat answer has none)."""
    if participant.provider_call_id is not None:
        for call in calls:
            if call.call_id == participant.provider_call_id:
                return call
    for call in calls:
        if call.number == participant.number:
            return call
    return None


def addition_refused(
    conference: Conference,
    number: str,
    numbers: Collection[str],
    now: datetime,
    default_max_duration: int,
    max_participants: int,
) -> AdditionRefused | None:
    """Why `number` may not join the conference now, or None when it may. `numbers` are those
    it has or has been promised (adds accepted and adds reserved), and `participant_count`
    counts both."""
    if conference.status.is_final or conference.finalized_at is not None:
        return AdditionRefused.FINAL
    if conference.cancel_requested_at is not None:
        return AdditionRefused.CANCELED
    if conference.provider_ended_at is not None:
        return AdditionRefused.ROOM_ENDED
    limit = conference.max_duration_seconds or default_max_duration
    if now - conference.accepted_at > timedelta(seconds=limit):
        return AdditionRefused.PAST_MAX_DURATION
    if number in numbers:
        return AdditionRefused.DUPLICATE_NUMBER
    taken = max(conference.participant_count or 0, len(conference.participants))
    if taken >= max_participants:
        return AdditionRefused.FULL
    return None


def outcome_when_settled(conference: Conference) -> ConferenceStatus:
    """A conference that placed at least one call completed; one that could place none failed."""
    if conference.cancel_requested_at is not None:
        return ConferenceStatus.CANCELED
    if any(p.dial_state is DialState.DIALED for p in conference.participants):
        return ConferenceStatus.COMPLETED
    return ConferenceStatus.FAILED


def next_poll_delay(poll_count: int, first: float, cap: float, unit_random: float) -> float:
    """Exponential backoff from `first` to `cap`, with ±20 % jitter so that conferences created in
    a burst do not all come due in the same second. `unit_random` is in [0, 1)."""
    base: float = min(cap, first * 2.0 ** min(poll_count, 20))
    return base * (0.8 + 0.4 * unit_random)
