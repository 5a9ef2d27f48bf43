"""The control API under /_simulator: what happened, the scenario, the provider's own changes."""

from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.simulator.calls import BillingCorrection, Call, progress
from service.simulator.ledger import Conference
from service.simulator.phone_numbers import to_e164
from service.simulator.scenario import FinalStatus, LineType, Scenario
from service.simulator.simulation import FinishedCall, Simulation

_DEFAULT_LIMIT = 100

Seconds = Annotated[int, Field(ge=0)]
Price = Annotated[Decimal, Field(ge=0)]


class CallCorrectionBody(BaseModel):
    """Each field given replaces the provider's value; null goes back to the computed one."""

    model_config = ConfigDict(extra="forbid")

    price: Price | None = None
    billed_seconds: Seconds | None = None
    duration_seconds: Seconds | None = None
    talk_seconds: Seconds | None = None


class FinishedCallBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str
    status: FinalStatus = "atendida"
    ring_seconds: Seconds = 3
    talk_seconds: Seconds = 20
    tipo: LineType | None = None
    record: bool = False
    caller_id: str | None = None
    price: Price | None = None
    billed_seconds: Seconds | None = None
    duration_seconds: Seconds | None = None

    @field_validator("number")
    @classmethod
    def _to_e164(cls, number: str) -> str:
        e164 = to_e164(number)
        if e164 is None:
            raise ValueError("number must be DDD + número or E.164")
        return e164

    def finished_call(self) -> FinishedCall:
        return FinishedCall(
            number=self.number,
            status=self.status,
            ring_seconds=self.ring_seconds,
            talk_seconds=self.talk_seconds,
            tipo=self.tipo,
            record=self.record,
            caller_id=self.caller_id,
            correction=BillingCorrection(
                duration_seconds=self.duration_seconds,
                billed_seconds=self.billed_seconds,
                price=self.price,
            ),
        )


class FinishedConferenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls: list[FinishedCallBody] = []


def control_routes() -> list[BaseRoute]:
    return [
        Route("/health", _health, methods=["GET"]),
        Route("/ledger", _ledger, methods=["GET"]),
        Route("/requests", _requests, methods=["GET"]),
        Route("/deliveries", _deliveries, methods=["GET"]),
        Route("/scenario", _get_scenario, methods=["GET"]),
        Route("/scenario", _put_scenario, methods=["PUT"]),
        Route("/reset", _reset, methods=["POST"]),
        Route("/calls/{call_id:int}", _correct_call, methods=["PATCH"]),
        Route("/calls/{call_id:int}/reported-status", _report_status, methods=["PUT"]),
        Route("/conferences", _add_finished_conference, methods=["POST"]),
        Route("/conferences/{conference_id:int}/calls", _add_finished_call, methods=["POST"]),
    ]


async def _health(request: Request) -> Response:
    simulation = _simulation(request)
    return _json(
        {"status": "ok", "seed": simulation.seed, "time_scale": simulation.clock.time_scale}
    )


async def _ledger(request: Request) -> Response:
    simulation = _simulation(request)
    journal = simulation.journal
    return _json(
        {
            "requests": {
                endpoint: {str(status): count for status, count in sorted(counts.items())}
                for endpoint, counts in journal.status_counts.items()
            },
            "dials": [
                {"conference_id": conference_id, "number": number, "count": count}
                for (conference_id, number), count in simulation.ledger.dials.items()
            ],
            "conferences": [
                _conference_entry(simulation, conference)
                for conference in simulation.ledger.conferences.values()
            ],
            "get_count_by_conference": dict(journal.gets_by_conference),
        }
    )


async def _requests(request: Request) -> Response:
    limit = _limit(request)
    if limit is None:
        return _json({"error": "limit must be a positive integer"}, 422)
    latest = list(_simulation(request).journal.latest)[-limit:]
    return _json(
        [
            {
                "method": received.method,
                "path": received.path,
                "query": received.query,
                "endpoint": received.endpoint,
                "status": received.status,
                "conference_id": received.conference_id,
                "number": received.number,
                "call_id": received.call_id,
                "body": received.body,
                "at": received.at.isoformat(),
                "received_at": received.received_at.isoformat(),
                "user_agent": received.user_agent,
            }
            for received in latest
        ]
    )


async def _deliveries(request: Request) -> Response:
    limit = _limit(request)
    if limit is None:
        return _json({"error": "limit must be a positive integer"}, 422)
    latest = list(_simulation(request).poster.deliveries)[-limit:]
    return _json(
        [
            {
                "webhook": delivery.webhook,
                "url": delivery.url,
                "payload": delivery.payload,
                "at": delivery.at.isoformat(),
                "outcome": delivery.outcome,
                "response_status": delivery.response_status,
            }
            for delivery in latest
        ]
    )


async def _get_scenario(request: Request) -> Response:
    return _json(_simulation(request).scenario.model_dump(mode="json"))


async def _put_scenario(request: Request) -> Response:
    try:
        scenario = Scenario.model_validate_json(await request.body())
    except ValidationError as error:
        return _invalid(error)
    in_force = _simulation(request).use_scenario(scenario)
    return _json(in_force.model_dump(mode="json"))


async def _reset(request: Request) -> Response:
    _simulation(request).reset()
    return _json({"status": "reset"})


async def _correct_call(request: Request) -> Response:
    simulation = _simulation(request)
    call = simulation.ledger.calls.get(request.path_params["call_id"])
    if call is None:
        return _json({"error": "no such call"}, 404)
    try:
        body = CallCorrectionBody.model_validate_json(await request.body())
    except ValidationError as error:
        return _invalid(error)
    if not progress(call, simulation.clock.now()).final:
        return _json({"error": "the call has not ended yet"}, 409)
    for field in body.model_fields_set:
        setattr(call.correction, field, getattr(body, field))
    return _json(_call_entry(simulation, call))


class ReportedStatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["preparando", "chamando", "atendida"] | None


async def _report_status(request: Request) -> Response:
    """Make the provider report another status for a call in progress (null: the true one)."""
    simulation = _simulation(request)
    call = simulation.ledger.calls.get(request.path_params["call_id"])
    if call is None:
        return _json({"error": "no such call"}, 404)
    try:
        body = ReportedStatusBody.model_validate_json(await request.body())
    except ValidationError as error:
        return _invalid(error)
    if progress(call, simulation.clock.now()).final:
        return _json({"error": "the call has ended"}, 409)
    call.reported_status = body.status
    return _json(_call_entry(simulation, call))


async def _add_finished_conference(request: Request) -> Response:
    try:
        body = FinishedConferenceBody.model_validate_json(await request.body())
    except ValidationError as error:
        return _invalid(error)
    simulation = _simulation(request)
    conference = simulation.add_finished_conference([call.finished_call() for call in body.calls])
    return _json(_conference_entry(simulation, conference), 201)


async def _add_finished_call(request: Request) -> Response:
    simulation = _simulation(request)
    conference = simulation.conference(request.path_params["conference_id"])
    if conference is None:
        return _json({"error": "no such conference"}, 404)
    try:
        body = FinishedCallBody.model_validate_json(await request.body())
    except ValidationError as error:
        return _invalid(error)
    call = simulation.add_finished_call(conference, body.finished_call())
    return _json(_call_entry(simulation, call), 201)


def _conference_entry(simulation: Simulation, conference: Conference) -> dict[str, Any]:
    simulation.settle(conference)
    wall_at = simulation.clock.wall_at
    return {
        "id": conference.id,
        "created_at": wall_at(conference.created_at).isoformat(),
        "ended_at": None
        if conference.ended_at is None
        else wall_at(conference.ended_at).isoformat(),
        "created_by_control": conference.created_by_control,
        "calls": [_call_entry(simulation, call) for call in conference.calls],
    }


def _call_entry(simulation: Simulation, call: Call) -> dict[str, Any]:
    state = progress(call, simulation.clock.now())
    return {
        "id": call.id,
        "number": call.number,
        "status": state.status,
        "duration_seconds": state.duration_seconds,
        "billed_seconds": state.billed_seconds,
        "talk_seconds": state.talk_seconds,
        "price": None if state.price is None else str(state.price),
        "recording_url": state.recording_url,
        "created_by_control": call.created_by_control,
    }


def _simulation(request: Request) -> Simulation:
    simulation: Simulation = request.app.state.simulation
    return simulation


def _limit(request: Request) -> int | None:
    raw = request.query_params.get("limit", str(_DEFAULT_LIMIT))
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else None


def _invalid(error: ValidationError) -> Response:
    return _json(
        {"error": "invalid body", "details": orjson.loads(error.json(include_url=False))}, 422
    )


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")
