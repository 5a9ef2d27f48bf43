"""The scenario: how the simulated network answers, bills, fails and calls back."""

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeGuard, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.simulator.dialect import PRECISE_FIXO, PRECISE_MOVEL, Dialect

FinalStatus = Literal[
    "atendida", "sem resposta", "ocupado", "congestionado", "falha", "cancelada", "não existe"
]
LineType = Literal["fixo", "movel"]
# 402 and 403 are the account's refusals (no balance; a wrong or rotated token), as the
# provider words them; the rest are load and gateway failures.
FaultStatus = Literal["402", "403", "429", "500", "502", "503", "504"]
EndpointKey = Literal[
    "POST /conferencia",
    "POST /conferencia/{id}",
    "GET /conferencia/{id}",
    "DELETE /conferencia/{id}",
    "GET /conferencia/relatorio",
    "GET /conferencia/chamadas/relatorio",
    "GET /webhook",
    "PUT /webhook/{nome}",
    "DELETE /webhook/{nome}",
]

_ENDPOINT_KEYS = frozenset(get_args(EndpointKey))

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[int, Field(ge=0)]

DEFAULT_WEBHOOK_NAMES = (
    "status_tempo_real",
    "chamada_fim",
    "envio_sms",
    "chamada_did_fim",
    "conferencia",
)


def is_endpoint_key(label: str) -> TypeGuard[EndpointKey]:
    return label in _ENDPOINT_KEYS


class CallRule(BaseModel):
    """What happens to a dialed number: the first rule whose `match` searches it wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = ""
    status: FinalStatus = "atendida"
    prepare_seconds: Seconds = 1
    ring_seconds: Seconds = 3
    talk_seconds: Seconds = 20
    tipo: LineType | None = None

    @field_validator("match")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"match is not a valid regular expression: {error}") from error
        return pattern

    def matches(self, number: str) -> bool:
        return re.search(self.match, number) is not None


class Tariffs(BaseModel):
    """Price per started minute, by line type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fixo: Annotated[Decimal, Field(ge=0)] = Decimal("0.12")
    movel: Annotated[Decimal, Field(ge=0)] = Decimal("0.35")

    def per_minute(self, line_type: LineType) -> Decimal:
        return self.movel if line_type == "movel" else self.fixo


class WebhookBehaviour(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    delay_ms: Annotated[float, Field(ge=0)] = 50.0
    duplicate_rate: Rate = 0.0
    loss_rate: Rate = 0.0
    reorder: bool = False


class Scenario(BaseModel):
    """Every field is optional; unknown fields are refused so that a typo cannot pass unnoticed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[CallRule, ...] = ()
    tariffs: Tariffs = Tariffs()
    latency_ms: dict[EndpointKey | Literal["default"], Annotated[float, Field(ge=0)]] = {}
    errors: dict[EndpointKey, dict[FaultStatus, Rate]] = {}
    dial_timeout_rate: Rate = 0.0
    dial_timeout_seconds: Annotated[float, Field(ge=0)] = 30.0
    # The call is placed, then the answer is a server error: what a gateway timing out in
    # front of a backend that did its work looks like. (Never 429: that is refused up front.)
    dial_errors_after_placing: dict[Literal["500", "502", "503", "504"], Rate] = {}
    no_balance: bool = False
    webhooks: WebhookBehaviour = WebhookBehaviour()
    webhook_names: tuple[str, ...] = DEFAULT_WEBHOOK_NAMES
    messy: bool = True
    report_metadata: bool = True
    dialect: Dialect = Dialect()
    # The account's request rate (real requests per second); above it, 429 in the envelope.
    max_rps: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_auto_end(cls, data: Any) -> Any:
        """`auto_end_conference` (a bool) was the first name of `dialect.room_end`."""
        if not isinstance(data, dict) or "auto_end_conference" not in data:
            return data
        data = dict(data)
        auto_end = data.pop("auto_end_conference")
        if not isinstance(auto_end, bool):
            raise ValueError("auto_end_conference must be a boolean")
        dialect = data.get("dialect")
        dialect = dict(
            dialect.model_dump(exclude_unset=True)
            if isinstance(dialect, Dialect)
            else dialect or {}
        )
        dialect.setdefault("room_end", "auto" if auto_end else "on_delete")
        data["dialect"] = dialect
        return data

    @model_validator(mode="after")
    def _error_rates_fit(self) -> "Scenario":
        for endpoint, rates in self.errors.items():
            if sum(rates.values()) > 1.0:
                raise ValueError(f"error rates for {endpoint!r} add up to more than 1")
        if sum(self.dial_errors_after_placing.values()) > 1.0:
            raise ValueError("dial_errors_after_placing rates add up to more than 1")
        return self

    @property
    def effective_tariffs(self) -> Tariffs:
        """The scenario's tariffs; six-decimal ones when the dialect asks for them and it names
        none."""
        if self.dialect.price_decimals == 6 and "tariffs" not in self.model_fields_set:
            return Tariffs(fixo=PRECISE_FIXO, movel=PRECISE_MOVEL)
        return self.tariffs

    def with_overrides(self, overrides: dict[str, Any]) -> "Scenario":
        """This scenario with the command line's settings on top: {"dialect": {...}, "max_rps"}."""
        if not overrides:
            return self
        data = self.model_dump(mode="json", exclude_unset=True)
        for key, value in overrides.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        return Scenario.model_validate(data)

    def rule_for(self, number: str) -> CallRule:
        return next((rule for rule in self.rules if rule.matches(number)), CallRule())

    def latency_seconds(self, endpoint: EndpointKey | None) -> float:
        default = self.latency_ms.get("default", 0.0)
        return (default if endpoint is None else self.latency_ms.get(endpoint, default)) / 1000.0

    def fault_for(self, endpoint: EndpointKey, draw: float) -> int | None:
        """The injected HTTP status for a uniform draw in [0, 1), or None to answer normally."""
        return _drawn(self.errors.get(endpoint, {}).items(), draw)

    def fault_after_placing(self, draw: float) -> int | None:
        """The server error answered for a dial that was placed anyway, or None."""
        return _drawn(self.dial_errors_after_placing.items(), draw)


def _drawn(rates: Iterable[tuple[str, float]], draw: float) -> int | None:
    threshold = 0.0
    for status, rate in sorted(rates):
        threshold += rate
        if draw < threshold:
            return int(status)
    return None
