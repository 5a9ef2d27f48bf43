"""Events the service publishes on `conference.events.v1`: their types, deterministic ids and
their payloads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from service.domain.conference import Conference, Participant

# Fixed forever: changing it would mint new ids for events already published.
_EVENT_NAMESPACE = UUID("6f1c1c52-5d0e-4a8e-9a57-3f1f4f0b7c11")


class EventType(StrEnum):
    ACCEPTED = "conference.accepted"
    DIALED = "conference.dialed"
    PARTICIPANT_ADDED = "participant.added"
    PARTICIPANT_STATUS_CHANGED = "participant.status_changed"
    COMPLETED = "conference.completed"
    FAILED = "conference.failed"
    CANCELED = "conference.canceled"
    UNRESOLVED = "conference.unresolved"
    RECONCILED = "conference.reconciled"


@dataclass(frozen=True)
class PendingEvent:
    """An event decided by a handler; the repository gives it its `sequence` when it commits."""

    event_id: UUID
    type: EventType
    occurred_at: datetime
    data: dict[str, Any]


def event_id(conference_id: UUID, kind: EventType, *change: str) -> UUID:
    """Derived from what changed, so recomputing the same change after a crash gives the same id."""
    return uuid5(_EVENT_NAMESPACE, "/".join((str(conference_id), kind.value, *change)))


# Prices are stored as numeric(18, 6): shown exactly, with at least 4 places (the provider
# bills to the cent and below; "0.1200" stays "0.1200", "0.123456" is not rounded).
MONEY_MIN_PLACES = 4


def money(value: Decimal | None) -> str | None:
    if value is None:
        return None
    exponent = value.normalize().as_tuple().exponent
    places = max(MONEY_MIN_PLACES, -exponent if isinstance(exponent, int) else 0)
    return f"{value:.{places}f}"


def participant_snapshot(p: Participant) -> dict[str, Any]:
    return {
        "number": p.number,
        "provider_call_id": p.provider_call_id,
        "status": p.provider_status,
        "dial_state": p.dial_state.value,
        "started_at": p.started_at.isoformat() if p.started_at else None,
        "duration_seconds": p.duration_seconds,
        "billed_seconds": p.billed_seconds,
        "talk_seconds": p.talk_seconds,
        "price": money(p.price),
        "currency": "BRL",
        "recording_url": p.recording_url,
        "rejection_reason": p.rejection_reason,
    }


def billing_snapshot(conference: Conference) -> dict[str, Any]:
    """The final event's data: everything downstream billing needs, in one place."""
    billed = [p.price for p in conference.participants if p.price is not None]
    return {
        "status": conference.status.value,
        "provider_conference_id": conference.provider_conference_id,
        "failure_reason": conference.failure_reason,
        "participants": [participant_snapshot(p) for p in conference.participants],
        "totals": {
            "billed_seconds": sum(p.billed_seconds or 0 for p in conference.participants),
            "price": money(sum(billed, Decimal("0"))),
            "currency": "BRL",
        },
    }


def envelope(conference: Conference, event: PendingEvent, sequence: int) -> dict[str, Any]:
    """The value written to Kafka, as CONTRACT.md defines it."""
    return {
        "event_id": str(event.event_id),
        "type": event.type.value,
        "occurred_at": event.occurred_at.isoformat(),
        "conference_id": str(conference.id),
        "sequence": sequence,
        "caller": conference.caller,
        "reference": conference.reference,
        "metadata": conference.metadata,
        "data": event.data,
    }
