"""The provider's JSON shapes, messy the way its documentation shows them.

When `messy` is on, some ids come as strings, some times carry milliseconds, a billed minute may
be written "00:00:60" and a zero price as the integer 0. Each choice is drawn from the seed and the
entity, so the same call always looks the same and a run can be repeated.
"""

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.simulator.calls import Call, CallEventKind, CallProgress
from service.simulator.clock import SimulatedClock
from service.simulator.ledger import Conference

_STRING_ID_RATE = 0.25
_MILLISECONDS_RATE = 0.3
_SIXTY_SECONDS_RATE = 0.5
_INTEGER_ZERO_RATE = 0.5

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

    def conference(
        self, conference: Conference, calls: list[tuple[Call, CallProgress]]
    ) -> dict[str, Any]:
        """The documented "Objeto Conferência"."""
        return {
            "id": self._maybe_text(conference.id, "conference", conference.id, "id"),
            "data_criacao": self._time("conference", conference.id, conference.created_at),
            "data_termino": self._time("conference", conference.id, conference.ended_at),
            "chamadas": [self.call(call, progress) for call, progress in calls],
        }

    def call(self, call: Call, progress: CallProgress) -> dict[str, Any]:
        """The documented "Objeto Chamada da Conferência", plus `tipo`."""
        return {
            "id": self._maybe_text(call.id, "call", call.id, "id"),
            "conferencia_id": self._maybe_text(
                call.conference_id, "call", call.id, "conferencia_id"
            ),
            "url_gravacao": progress.recording_url,
            "numero": call.number,
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

    def call_end(self, call: Call, progress: CallProgress) -> dict[str, Any]:
        """The `chamada_fim` webhook; `conferencia_id` is our addition, to correlate it."""
        caller_leg: dict[str, Any] = dict.fromkeys(_LEG_FIELDS)
        caller_leg["numero"] = call.caller_id
        callee_leg: dict[str, Any] = {
            "data_inicio": self._time("call", call.id, progress.ringing_at),
            "numero": call.number,
            "tipo": call.plan.line_type,
            "status": progress.status,
            "duracao_segundos": progress.duration_seconds,
            "duracao": self._duration(call.id, progress.duration_seconds),
            "duracao_cobrada_segundos": progress.billed_seconds,
            "duracao_cobrada": self._duration(call.id, progress.billed_seconds),
            "duracao_falada_segundos": progress.talk_seconds,
            "duracao_falada": self._duration(call.id, progress.talk_seconds),
            "preco": self._price(call.id, progress),
            "motivo_desconexao": progress.hangup_cause,
        }
        return {
            "id": call.id,
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
            "conferencia_id": call.conference_id,
        }

    def conference_event(self, call: Call, kind: CallEventKind, at: float) -> dict[str, Any]:
        """The real-time conference event: no offset on the time, and `chamada_id` a string."""
        return {
            "data_criacao": self.clock.wall_at(at)
            .replace(tzinfo=None)
            .isoformat(timespec="seconds"),
            "evento_conferencia": _EVENT_NAMES[kind],
            "numero": call.number,
            "gravar_audio": call.record,
            "conferencia_id": call.conference_id,
            "chamada_id": str(call.id),
            "cliente_id": self.client_id,
        }

    def _maybe_text(self, value: int, kind: str, entity_id: int, trait: str) -> int | str:
        return str(value) if self._coin(kind, entity_id, trait, _STRING_ID_RATE) else value

    def _time(self, kind: str, entity_id: int, instant: float | None) -> str | None:
        if instant is None:
            return None
        wall: datetime = self.clock.wall_at(instant)
        with_milliseconds = self._coin(kind, entity_id, "milliseconds", _MILLISECONDS_RATE)
        return wall.isoformat(timespec="milliseconds" if with_milliseconds else "seconds")

    def _duration(self, call_id: int, seconds: int | None) -> str | None:
        if seconds is None:
            return None
        sixty = self._coin("call", call_id, "sixty", _SIXTY_SECONDS_RATE)
        return hours_minutes_seconds(seconds, sixty_as_seconds=sixty)

    def _price(self, call_id: int, progress: CallProgress) -> float | int | None:
        if progress.price is None:
            return None
        if progress.price == 0 and self._coin("call", call_id, "zero", _INTEGER_ZERO_RATE):
            return 0
        return float(progress.price)

    def _coin(self, kind: str, entity_id: int, trait: str, probability: float) -> bool:
        if not self.messy:
            return False
        return random.Random(f"{self.seed}:{kind}:{entity_id}:{trait}").random() < probability


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
