"""The provider's JSON shapes, in the scenario's dialect and messy the way its docs show them.

When `messy` is on, some times carry milliseconds and a zero price may be the integer 0; the
dialect's "mixed" values (ids, billed minute) are drawn too. Each choice is drawn from the seed and
the entity, so the same call always looks the same and a run can be repeated. The GET shape's
"mixed" is drawn per conference whether or not `messy` is on.
"""

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.simulator.calls import Call, CallEventKind, CallProgress
from service.simulator.clock import SimulatedClock
from service.simulator.dialect import Dialect, echoed_number
from service.simulator.ledger import Conference

_STRING_ID_RATE = 0.25
_MILLISECONDS_RATE = 0.3
_SIXTY_SECONDS_RATE = 0.5
_INTEGER_ZERO_RATE = 0.5
_FLAT_RATE = 0.5

_EVENT_NAMES: dict[CallEventKind, str] = {"joined": "Entrou", "left": "Saiu"}


def hours_minutes_seconds(seconds: int, *, sixty_as_seconds: bool = False) -> str:
    if sixty_as_seconds and seconds == 60:
        return "00:00:60"
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours:02d}:{minute:02d}:{second:02d}"


@dataclass(frozen=True)
class Rendering:
    clock: SimulatedClock
    seed: int
    messy: bool
    client_id: int
    dialect: Dialect = field(default_factory=Dialect)

    def conference(
        self, conference: Conference, calls: list[tuple[Call, CallProgress]]
    ) -> dict[str, Any]:
        """The documented "Objeto Conferência", or the flat example in that dialect."""
        shape = self.dialect.get_shape
        if shape == "flat" or (
            shape == "mixed" and _drawn(self.seed, "conference", conference.id, "flat", _FLAT_RATE)
        ):
            return self.flat_conference(conference, calls[-1] if calls else None)
        return {
            "id": self._id(conference.id, "conference", conference.id, "id"),
            "data_criacao": self._time("conference", conference.id, conference.created_at),
            "data_termino": self._time("conference", conference.id, conference.ended_at),
            "chamadas": [self.call(call, progress) for call, progress in calls],
        }

    def flat_conference(
        self, conference: Conference, latest: tuple[Call, CallProgress] | None
    ) -> dict[str, Any]:
        """The GET example of the docs, copied from the audio section: one call, the most recent,
        with no call id, no `data_termino` and no recording; an empty room is its id and time."""
        flat: dict[str, Any] = {
            "id": self._id(conference.id, "conference", conference.id, "id"),
            "data_criacao": self._time("conference", conference.id, conference.created_at),
        }
        if latest is None:
            return flat
        call, progress = latest
        return {
            **flat,
            "numero_destino": self.number(call.number),
            **self._leg(call, progress),
            "url_conferencia": None,
            "resposta_usuario": False,
            "resposta": None,
        }

    def created(self, conference_id: int) -> dict[str, Any]:
        """`dados` of the create answer: the documented `{"id": 4921}`."""
        return {"id": self._id(conference_id, "conference", conference_id, "created", tidy=True)}

    def dialed(self, call_id: int) -> dict[str, Any]:
        """`dados` of the dial answer: an integer id unless the dialect says otherwise."""
        return {"id": self._id(call_id, "call", call_id, "dialed", tidy=True)}

    def number(self, e164: str | None) -> str | None:
        return None if e164 is None else echoed_number(e164, self.dialect.numbers)

    def call(self, call: Call, progress: CallProgress) -> dict[str, Any]:
        """The documented "Objeto Chamada da Conferência", plus `tipo`."""
        return {
            "id": self._id(call.id, "call", call.id, "id"),
            "conferencia_id": self._id(call.conference_id, "call", call.id, "conferencia_id"),
            "url_gravacao": progress.recording_url,
            "numero": self.number(call.number),
            "data_criacao": self._time("call", call.id, call.dialed_at),
            "cli": self.client_id,
            "duracao": self._duration(call.id, progress.duration_seconds),
            "duracao_cobrada": self._duration(call.id, progress.billed_seconds),
            "duracao_falada": self._duration(call.id, progress.talk_seconds),
            "status": progress.status,
            "preco": self._price(call.id, progress),
            "data_inicio": self._time("call", call.id, progress.ringing_at),
            "tipo": call.plan.line_type,
        }

    def _leg(self, call: Call, progress: CallProgress) -> dict[str, Any]:
        """A call as the audio-like records show it (the flat GET, the `chamada_fim` legs):
        durations both in seconds and as `HH:MM:SS`."""
        return {
            "data_inicio": self._time("call", call.id, progress.ringing_at),
            "tipo": call.plan.line_type,
            "status": progress.status,
            "duracao_segundos": progress.duration_seconds,
            "duracao": self._duration(call.id, progress.duration_seconds),
            "duracao_cobrada_segundos": progress.billed_seconds,
            "duracao_cobrada": self._duration(call.id, progress.billed_seconds),
            "duracao_falada_segundos": progress.talk_seconds,
            "duracao_falada": self._duration(call.id, progress.talk_seconds),
            "preco": self._price(call.id, progress),
        }

    def call_end(self, call: Call, progress: CallProgress) -> dict[str, Any]:
        """The `chamada_fim` webhook; `conferencia_id` is our addition, to correlate it, and the
        dialect may leave it out."""
        caller_leg: dict[str, Any] = dict.fromkeys(_LEG_FIELDS)
        caller_leg["numero"] = self.number(call.caller_id)
        callee_leg: dict[str, Any] = {
            "numero": self.number(call.number),
            **self._leg(call, progress),
            "motivo_desconexao": progress.hangup_cause,
        }
        payload: dict[str, Any] = {
            "id": self._id(call.id, "call", call.id, "id", tidy=True),
            "data_criacao": self._time("call", call.id, call.dialed_at),
            "ativa": False,
            "url_gravacao": progress.recording_url,
            "cliente_id": self.client_id,
            "conta_id": self.client_id,
            "ramal_id_origem": None,
            "tags": None,
            "status_geral": "finalizada",
            "origem": caller_leg,
            "destino": callee_leg,
            "gravacoes_parciais": [],
        }
        if self.dialect.webhook_conference_id == "included":
            payload["conferencia_id"] = self._id(
                call.conference_id, "call", call.id, "conferencia_id", tidy=True
            )
        return payload

    def conference_event(self, call: Call, kind: CallEventKind, at: float) -> dict[str, Any]:
        """The real-time conference event: no offset on the time, and `chamada_id` a string
        (as documented; the dialect's "number" ids make it a number)."""
        ids = self.dialect.ids
        return {
            "data_criacao": self.clock.wall_at(at)
            .replace(tzinfo=None)
            .isoformat(timespec="seconds"),
            "evento_conferencia": _EVENT_NAMES[kind],
            "numero": self.number(call.number),
            "gravar_audio": call.record,
            "conferencia_id": str(call.conference_id) if ids == "string" else call.conference_id,
            "chamada_id": call.id if ids == "number" else str(call.id),
            "cliente_id": self.client_id,
        }

    def _id(
        self, value: int, kind: str, entity_id: int, trait: str, *, tidy: bool = False
    ) -> int | str:
        """The dialect's form; "mixed" draws strings where the docs show them, never where
        `tidy` (the create and dial answers and `chamada_fim`, always numbers in the docs)."""
        form = self.dialect.ids
        if form == "number" or (form == "mixed" and tidy):
            return value
        if form == "string":
            return str(value)
        return str(value) if self._coin(kind, entity_id, trait, _STRING_ID_RATE) else value

    def _time(self, kind: str, entity_id: int, instant: float | None) -> str | None:
        if instant is None:
            return None
        wall: datetime = self.clock.wall_at(instant)
        if self.dialect.timestamps == "naive":
            wall = wall.replace(tzinfo=None)
        with_milliseconds = self._coin(kind, entity_id, "milliseconds", _MILLISECONDS_RATE)
        return wall.isoformat(timespec="milliseconds" if with_milliseconds else "seconds")

    def _duration(self, call_id: int, seconds: int | None) -> str | None:
        if seconds is None:
            return None
        written = self.dialect.billed_minute
        if written == "mixed":
            sixty = self._coin("call", call_id, "sixty", _SIXTY_SECONDS_RATE)
        else:
            sixty = written == "00:00:60"
        return hours_minutes_seconds(seconds, sixty_as_seconds=sixty)

    def _price(self, call_id: int, progress: CallProgress) -> float | int | str | None:
        if progress.price is None:
            return None
        price = progress.price
        if self.dialect.prices == "string":
            return str(price)
        if price == 0 and self._coin("call", call_id, "zero", _INTEGER_ZERO_RATE):
            return 0
        return float(price)

    def _coin(self, kind: str, entity_id: int, trait: str, probability: float) -> bool:
        return self.messy and _drawn(self.seed, kind, entity_id, trait, probability)


def _drawn(seed: int, kind: str, entity_id: int, trait: str, probability: float) -> bool:
    return random.Random(f"{seed}:{kind}:{entity_id}:{trait}").random() < probability


_LEG_FIELDS = (
    "data_inicio",
    "numero",
    "tipo",
    "status",
    "duracao_segundos",
    "duracao",
    "duracao_cobrada_segundos",
    "duracao_cobrada",
    "duracao_falada_segundos",
    "duracao_falada",
    "preco",
    "motivo_desconexao",
)
