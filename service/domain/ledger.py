"""The billing ledger's corrections: a call's figures stay as first settled, reconcile appends
one adjustment per changed field, and a call's current figures are the latest adjustment of
each field, else the original."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, get_args
from uuid import UUID

from service.domain.conference import Conference, Participant
from service.domain.events import EventType, event_id, money

AdjustableField = Literal["price", "billed_seconds", "duration_seconds", "talk_seconds"]
ADJUSTABLE_FIELDS: tuple[AdjustableField, ...] = get_args(AdjustableField)

# participant.price is numeric(18, 6): Postgres would round a seventh place silently and
# refuse a thirteenth integer digit, so a price outside this is refused before it gets there.
PRICE_PLACES = 6
PRICE_INTEGER_DIGITS = 12


def storable_price(price: Decimal) -> bool:
    """Whether the ledger can hold this price exactly, as the provider sent it."""
    if not price.is_finite() or abs(price) >= Decimal(10) ** PRICE_INTEGER_DIGITS:
        return False
    return price == price.quantize(Decimal(1).scaleb(-PRICE_PLACES))


FieldValue = Decimal | int | None


def as_text(field: AdjustableField, value: FieldValue) -> str | None:
    """How a field's value is written in an adjustment: money as its exact decimal string."""
    if value is None:
        return None
    if field == "price":
        assert isinstance(value, Decimal)
        return money(value)
    return str(value)


def as_json(field: AdjustableField, value: str | None) -> str | int | None:
    """How it is published: money as a decimal string, seconds as an integer."""
    if value is None or field == "price":
        return value
    return int(value)


@dataclass(frozen=True)
class Adjustment:
    """One correction of one billed field of one call, appended by a reconcile run."""

    conference_id: UUID
    position: int
    provider_call_id: str | None
    field: AdjustableField
    # 1 for the field's first correction, 2 for the next: the n-th correction exists once.
    ordinal: int
    before: str | None
    after: str
    source: str
    run_id: int
    created_at: datetime

    @property
    def event_id(self) -> UUID:
        return event_id(
            self.conference_id,
            EventType.RECONCILED,
            "adjustment",
            str(self.position),
            self.field,
            str(self.ordinal),
            self.after,
        )

    def wire(self, number: str) -> dict[str, Any]:
        return {
            "provider_call_id": self.provider_call_id,
            "number": number,
            "field": self.field,
            "ordinal": self.ordinal,
            "before": as_json(self.field, self.before),
            "after": as_json(self.field, self.after),
        }


def current(participant: Participant, adjustments: list[Adjustment]) -> Participant:
    """The participant as billed now: each field's latest adjustment over its original value."""
    latest: dict[str, Adjustment] = {}
    for adjustment in adjustments:
        if adjustment.position != participant.position:
            continue
        known = latest.get(adjustment.field)
        if known is None or adjustment.ordinal > known.ordinal:
            latest[adjustment.field] = adjustment
    changes: dict[str, FieldValue] = {
        name: Decimal(a.after) if name == "price" else int(a.after) for name, a in latest.items()
    }
    return dataclasses.replace(participant, **changes)  # type: ignore[arg-type]


def current_conference(conference: Conference, adjustments: list[Adjustment]) -> Conference:
    """A copy of the conference with every participant's current figures, for its events."""
    return dataclasses.replace(
        conference, participants=[current(p, adjustments) for p in conference.participants]
    )


def field_value(participant: Participant, field: AdjustableField) -> FieldValue:
    value: FieldValue = getattr(participant, field)
    return value
