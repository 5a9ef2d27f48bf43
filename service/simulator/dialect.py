"""The provider's dialect: each undocumented guess about its answers, as a setting with its values.

The docs contradict themselves or say nothing on these points (see the README's simulator section),
so the service must work whichever one the real provider speaks. `Dialect()` is the default: the
reading of the provider notes the simulator has always served, except `clock` (see clock.py).
"""

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

# How a number is echoed: +554832830151, 4832830151 (the seed's examples) or 554832830151.
NumberForm = Literal["e164", "national", "digits55"]
# GET /conferencia/{id}: the "Objeto Conferência", the audio-like flat example (the most recent
# call only, and no call id), or either one per conference (drawn from the seed).
GetShape = Literal["object", "flat", "mixed"]
# The id in the dial's answer: the call's id in the GET, another id, or none (`dados` null).
DialId = Literal["same", "different", "absent"]
# A room closes at its last hang-up, or stays open until DELETE.
RoomEnd = Literal["auto", "on_delete"]
# Whether `chamada_fim` carries `conferencia_id` (our addition to the documented payload).
WebhookConferenceId = Literal["included", "omitted"]
# Ids as JSON numbers, strings, or the documented mix (some strings, drawn when `messy`).
IdForm = Literal["mixed", "number", "string"]
PriceForm = Literal["number", "string"]
# The decimals of the default tariffs (0.12 and 0.35, or 0.071234 and 0.351789); a price is the
# tariff times the billed minutes, exactly, so a scenario's own tariffs decide when it names them.
PriceDecimals = Literal[2, 6]
# A billed minute as "00:01:00", the conference docs' "00:00:60", or either (drawn when `messy`).
BilledMinute = Literal["mixed", "00:01:00", "00:00:60"]
Timestamps = Literal["offset", "naive"]
# Simulated walls on the scaled clock (consistent with durations), or real walls (the old rule).
ClockRule = Literal["scaled", "real"]

# Tariffs with six decimals, used when `price_decimals` is 6 and the scenario names none.
PRECISE_FIXO = Decimal("0.071234")
PRECISE_MOVEL = Decimal("0.351789")


class Dialect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    numbers: NumberForm = "e164"
    get_shape: GetShape = "object"
    dial_id: DialId = "same"
    room_end: RoomEnd = "auto"
    webhook_conference_id: WebhookConferenceId = "included"
    ids: IdForm = "mixed"
    prices: PriceForm = "number"
    price_decimals: PriceDecimals = 2
    billed_minute: BilledMinute = "mixed"
    timestamps: Timestamps = "offset"
    clock: ClockRule = "scaled"


def echoed_number(e164: str, form: NumberForm) -> str:
    """A Brazilian number in the dialect's form; a foreign one stays E.164 unless digits55."""
    if form == "digits55":
        return e164.lstrip("+")
    if form == "national" and e164.startswith("+55"):
        return e164[3:]
    return e164


# Added to a call's id to make the dial answer's id when `dial_id` is "different": far above any
# id the ledger hands out, even with the e2e lanes' id offsets.
DIFFERENT_DIAL_ID_OFFSET = 10**15
