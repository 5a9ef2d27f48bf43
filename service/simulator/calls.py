"""A participant call's lifecycle and bill, derived from its plan and an instant: nothing ticks."""

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypeVar

from service.simulator.scenario import FinalStatus, LineType

ANSWERED = "atendida"
CANCELED = "cancelada"
PREPARING = "preparando"
RINGING = "chamando"

_HANGUP_CAUSES: dict[str, str] = {
    "atendida": "16. normal",
    "sem resposta": "18. sem resposta",
    "ocupado": "17. ocupado",
    "congestionado": "34. sem canal disponível",
    "falha": "127. erro de conectividade",
    "cancelada": "16. normal",
    "não existe": "1. telefone não existe",
}

CallEventKind = Literal["joined", "left", "ended"]
_Value = TypeVar("_Value")


@dataclass(frozen=True)
class CallPlan:
    """Decided when the number is dialed, so later scenario changes never rewrite history."""

    outcome: FinalStatus
    prepare_seconds: int
    ring_seconds: int
    talk_seconds: int
    line_type: LineType
    price_per_minute: Decimal


@dataclass
class BillingCorrection:
    """Values the control API forced on a finished call; None keeps the computed one."""

    duration_seconds: int | None = None
    billed_seconds: int | None = None
    talk_seconds: int | None = None
    price: Decimal | None = None


@dataclass
class Call:
    id: int
    conference_id: int
    number: str
    caller_id: str | None
    record: bool
    plan: CallPlan
    dialed_at: float
    recording_url: str | None
    created_by_control: bool = False
    hangup_at: float | None = None
    correction: BillingCorrection = field(default_factory=BillingCorrection)
    # A status the provider reports for a call still in progress instead of the true one (the
    # provider correcting itself when it is cleared): set through the control API.
    reported_status: str | None = None
    announced: set[CallEventKind] = field(default_factory=set)


@dataclass(frozen=True)
class Timeline:
    """Offsets in simulated seconds from the dial, as far as they are known now."""

    answered_after: float | None
    ended_after: float
    final_status: str


@dataclass(frozen=True)
class CallEvent:
    kind: CallEventKind
    at: float


@dataclass(frozen=True)
class CallProgress:
    status: str
    final: bool
    ringing_at: float | None
    ended_at: float | None
    duration_seconds: int | None
    talk_seconds: int | None
    billed_seconds: int | None
    price: Decimal | None
    hangup_cause: str | None
    recording_url: str | None


def timeline(call: Call) -> Timeline:
    plan = call.plan
    ring = float(plan.ring_seconds)
    cut = math.inf if call.hangup_at is None else max(0.0, call.hangup_at - call.dialed_at)
    if plan.outcome == ANSWERED:
        if cut <= ring:
            return Timeline(None, cut, CANCELED)
        return Timeline(ring, min(ring + plan.talk_seconds, cut), ANSWERED)
    if cut < ring:
        return Timeline(None, cut, CANCELED)
    return Timeline(None, ring, plan.outcome)


def billed_seconds(talk_seconds: int) -> int:
    """Whole started minutes, and at least one once the call was answered."""
    return max(60, math.ceil(talk_seconds / 60) * 60)


def progress(call: Call, now: float) -> CallProgress:
    plan = call.plan
    line = timeline(call)
    elapsed = now - call.dialed_at
    ringing_after = float(min(plan.prepare_seconds, plan.ring_seconds))
    rang = ringing_after <= min(elapsed, line.ended_after)
    ringing_at = call.dialed_at + ringing_after if rang else None
    if elapsed < line.ended_after:
        if line.answered_after is not None and elapsed >= line.answered_after:
            status = ANSWERED
        else:
            status = RINGING if rang else PREPARING
        status = call.reported_status or status
        return CallProgress(status, False, ringing_at, None, None, None, None, None, None, None)

    duration = math.floor(line.ended_after)
    if line.answered_after is None:
        talk = billed = None
        price = plan.price_per_minute * 0
        recording_url = None
    else:
        talk = math.floor(line.ended_after - line.answered_after)
        billed = billed_seconds(talk)
        price = plan.price_per_minute * (billed // 60)
        recording_url = call.recording_url
    correction = call.correction
    return CallProgress(
        status=line.final_status,
        final=True,
        ringing_at=ringing_at,
        ended_at=call.dialed_at + line.ended_after,
        duration_seconds=_corrected(correction.duration_seconds, duration),
        talk_seconds=_corrected(correction.talk_seconds, talk),
        billed_seconds=_corrected(correction.billed_seconds, billed),
        price=_corrected(correction.price, price),
        hangup_cause=_HANGUP_CAUSES.get(line.final_status, "indefinido"),
        recording_url=recording_url,
    )


def events(call: Call) -> list[CallEvent]:
    """What the conference and call-end webhooks report, in order, as the timeline stands."""
    line = timeline(call)
    ended_at = call.dialed_at + line.ended_after
    if line.answered_after is None:
        return [CallEvent("ended", ended_at)]
    return [
        CallEvent("joined", call.dialed_at + line.answered_after),
        CallEvent("left", ended_at),
        CallEvent("ended", ended_at),
    ]


def is_final(call: Call, now: float) -> bool:
    return now - call.dialed_at >= timeline(call).ended_after


def _corrected(forced: _Value | None, computed: _Value | None) -> _Value | None:
    return computed if forced is None else forced
