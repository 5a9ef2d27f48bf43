"""The provider's HTTP API: conferences, their calls, reports and webhook settings."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.simulator.calls import Call
from service.simulator.clock import SAO_PAULO
from service.simulator.dialect import DIFFERENT_DIAL_ID_OFFSET
from service.simulator.envelope import ProviderError, enveloped, gateway_page, refusal, success
from service.simulator.journal import CLIENT_GAVE_UP, ReceivedRequest
from service.simulator.ledger import Conference
from service.simulator.phone_numbers import to_e164
from service.simulator.report_query import parse_report_query
from service.simulator.scenario import is_endpoint_key
from service.simulator.simulation import Simulation

logger = logging.getLogger(__name__)

Handler = Callable[[Request, Simulation, bytes], Awaitable[Response]]
_Entry = TypeVar("_Entry")

_INVALID_NUMBER = "{field} inválido, formato DDD + Número ex: 4832830151"
_LOGGED_BODY_CHARACTERS = 4000
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def provider_routes() -> list[BaseRoute]:
    return [
        _route("/conferencia", "POST", "POST /conferencia", _create_conference),
        _route("/conferencia", "GET", "GET /conferencia", _which_conference),
        _route("/conferencia", "DELETE", "DELETE /conferencia", _which_conference),
        _route("/conferencia/relatorio", "GET", "GET /conferencia/relatorio", _conference_report),
        _route(
            "/conferencia/chamadas/relatorio",
            "GET",
            "GET /conferencia/chamadas/relatorio",
            _call_report,
        ),
        _route("/conferencia/{conference_id}", "GET", "GET /conferencia/{id}", _get_conference),
        _route("/conferencia/{conference_id}", "POST", "POST /conferencia/{id}", _dial),
        _route(
            "/conferencia/{conference_id}", "DELETE", "DELETE /conferencia/{id}", _end_conference
        ),
        _route("/webhook", "GET", "GET /webhook", _list_webhooks),
        _route("/webhook", "PUT", "PUT /webhook/{nome}", _which_webhook),
        _route("/webhook/{name}", "PUT", "PUT /webhook/{nome}", _set_webhook),
        _route("/webhook/{name}", "DELETE", "DELETE /webhook/{nome}", _delete_webhook),
        Route("/{path:path}", _provider_endpoint("unmatched", _unknown_path), methods=_ALL_METHODS),
    ]


def _route(path: str, method: str, endpoint: str, handler: Handler) -> Route:
    return Route(path, _provider_endpoint(endpoint, handler), methods=[method])


def _provider_endpoint(endpoint: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def respond(request: Request) -> Response:
        simulation: Simulation = request.app.state.simulation
        received_at = datetime.now(SAO_PAULO)
        body = await request.body()
        status = CLIENT_GAVE_UP
        try:
            response = await _answer(simulation, endpoint, handler, request, body)
            status = response.status_code
            return response
        finally:
            simulation.journal.record(
                ReceivedRequest(
                    method=request.method,
                    path=_path_as_sent(request),
                    query=request.url.query,
                    endpoint=endpoint,
                    status=status,
                    conference_id=_conference_in(request),
                    number=getattr(request.state, "number", None),
                    call_id=getattr(request.state, "call_id", None),
                    body=_loggable(body),
                    at=datetime.now(SAO_PAULO),
                    received_at=received_at,
                    user_agent=request.headers.get("user-agent", ""),
                )
            )

    return respond


async def _answer(
    simulation: Simulation, endpoint: str, handler: Handler, request: Request, body: bytes
) -> Response:
    scenario = simulation.scenario
    injectable = endpoint if is_endpoint_key(endpoint) else None
    latency = scenario.latency_seconds(injectable)
    if latency:
        await asyncio.sleep(latency)
    token = request.headers.get("access-token")
    if token is None or token not in simulation.config.tokens:
        return refusal(ProviderError(403, 40, "access token inválido"))
    if not simulation.rate.admit(token, scenario.max_rps):
        return _fault(429)
    if endpoint == "GET /conferencia/{id}":
        simulation.journal.count_conference_get(request.path_params["conference_id"])
    if injectable is not None and injectable in scenario.errors:
        fault = scenario.fault_for(injectable, simulation.draw.random())
        if fault is not None:
            return _fault(fault)
    try:
        return await handler(request, simulation, body)
    except ProviderError as error:
        return refusal(error)
    except Exception:
        logger.exception("simulator_handler_failed endpoint=%s", endpoint)
        return enveloped(500, 50, "erro interno")


def _fault(status: int) -> Response:
    """An injected failure as the provider shows it: its envelope for 402, 403, 429 and 500,
    a gateway's HTML page for the rest."""
    if status == 402:
        return enveloped(402, 9, "saldo insuficiente")
    if status == 403:
        return enveloped(403, 40, "access token inválido")
    if status == 429:
        return enveloped(429, 0, "limite de requisições por segundo excedido")
    if status == 500:
        return enveloped(500, 50, "erro interno")
    return gateway_page(status)


async def _create_conference(request: Request, simulation: Simulation, body: bytes) -> Response:
    # SDKs send nothing, {} or junk here and the provider ignores it; but the documented form
    # with `numero_destino` would dial that number at once, so the simulator does too.
    form = _json_object_or_none(body) or {}
    dial_to = form.get("numero_destino")
    number = caller_id = None
    record = False
    if dial_to is not None and dial_to != "":
        number = to_e164(dial_to)
        if number is None:
            raise ProviderError(405, 11, _INVALID_NUMBER.format(field="numero_destino"))
        caller_id = _caller_id(form.get("bina"))
        record = _recording_wish(form.get("gravar_conferencia"), "gravar_conferencia")
        _require_balance(simulation)
        request.state.number = number
    conference = simulation.open_conference()
    request.state.conference_id = conference.id
    if number is not None:
        request.state.call_id = simulation.dial(conference, number, caller_id, record).id
    return success("conferencia criado com sucesso", simulation.rendering.created(conference.id))


async def _which_conference(request: Request, simulation: Simulation, body: bytes) -> Response:
    raise ProviderError(404, 10, "qual conferencia? informar ID /conferencia/ID")


async def _get_conference(request: Request, simulation: Simulation, body: bytes) -> Response:
    conference = _find_conference(request, simulation)
    return success("dados retornados com sucesso", simulation.describe(conference))


async def _dial(request: Request, simulation: Simulation, body: bytes) -> Response:
    form = _json_object(body)
    conference = _find_conference(request, simulation)
    _require_active(conference)
    raw_number = form.get("numero")
    if raw_number is None or raw_number == "":
        raise ProviderError(405, 10, "o parametro numero é obrigatório")
    number = to_e164(raw_number)
    request.state.number = number or str(raw_number)
    if number is None:
        raise ProviderError(405, 11, _INVALID_NUMBER.format(field="numero"))
    caller_id = _caller_id(form.get("bina"))
    record = _recording_wish(form.get("gravar_audio"), "gravar_audio")
    _require_balance(simulation)
    call = simulation.dial(conference, number, caller_id, record)
    request.state.call_id = call.id
    scenario = simulation.scenario
    if scenario.dial_timeout_rate and simulation.draw.random() < scenario.dial_timeout_rate:
        # The call is placed; only the answer is late, so the client cannot know it was.
        await asyncio.sleep(scenario.dial_timeout_seconds)
    if scenario.dial_errors_after_placing:
        # The call is placed; the answer says it failed.
        fault = scenario.fault_after_placing(simulation.draw.random())
        if fault is not None:
            return _fault(fault)
    return success("chamada criada com sucesso", _dial_answer(simulation, call))


def _dial_answer(simulation: Simulation, call: Call) -> dict[str, Any] | None:
    """`dados` of the dial: the call's id as the GET lists it, another id, or none at all."""
    dial_id = simulation.scenario.dialect.dial_id
    if dial_id == "absent":
        return None
    offset = DIFFERENT_DIAL_ID_OFFSET if dial_id == "different" else 0
    return simulation.rendering.dialed(call.id + offset)


async def _end_conference(request: Request, simulation: Simulation, body: bytes) -> Response:
    conference = _find_conference(request, simulation)
    _require_active(conference)
    simulation.end(conference)
    return success("conferencia encerrada com sucesso")


async def _conference_report(request: Request, simulation: Simulation, body: bytes) -> Response:
    conferences = simulation.ledger.conferences.values()
    return _report(request, simulation, conferences, _created_at, simulation.describe)


async def _call_report(request: Request, simulation: Simulation, body: bytes) -> Response:
    calls = simulation.ledger.calls.values()
    return _report(request, simulation, calls, _dialed_at, simulation.describe_call)


def _report(
    request: Request,
    simulation: Simulation,
    entries: Iterable[_Entry],
    created_at: Callable[[_Entry], float],
    describe: Callable[[_Entry], dict[str, Any]],
) -> Response:
    query = parse_report_query(request.query_params)
    wall_at = simulation.clock.wall_at
    found = [entry for entry in entries if query.covers(wall_at(created_at(entry)))]
    page = found[query.offset : query.offset + query.limit]
    dados: dict[str, Any] = {"relatorio": [describe(entry) for entry in page]}
    if simulation.scenario.report_metadata:
        dados.update(total=len(found), posicao=query.offset, limite=query.limit)
    return success("dados retornados com sucesso", dados)


def _created_at(conference: Conference) -> float:
    return conference.created_at


def _dialed_at(call: Call) -> float:
    return call.dialed_at


async def _list_webhooks(request: Request, simulation: Simulation, body: bytes) -> Response:
    webhooks = [{"webhook": name, "url": url} for name, url in simulation.webhooks.urls.items()]
    return success("dados retornados com sucesso", {"webhooks": webhooks})


async def _which_webhook(request: Request, simulation: Simulation, body: bytes) -> Response:
    raise ProviderError(405, 10, "o parametro webhook é obrigatório")


async def _set_webhook(request: Request, simulation: Simulation, body: bytes) -> Response:
    name = _known_webhook(request, simulation)
    url = _json_object(body).get("url")
    if url is None or url == "":
        raise ProviderError(405, 10, "o parametro url é obrigatório")
    if not _is_web_address(url):
        raise ProviderError(
            405, 11, "o parametro url é inválido, informar ex: http://foooo.bar/x/y"
        )
    simulation.webhooks.urls[name] = url
    return success("webhook atualizado com sucesso")


async def _delete_webhook(request: Request, simulation: Simulation, body: bytes) -> Response:
    simulation.webhooks.urls.pop(_known_webhook(request, simulation), None)
    return success("webhook apagado com sucesso")


async def _unknown_path(request: Request, simulation: Simulation, body: bytes) -> Response:
    raise ProviderError(404, 90, "rota não encontrada")


def _find_conference(request: Request, simulation: Simulation) -> Conference:
    conference_id = _conference_in(request)
    conference = None if conference_id is None else simulation.conference(conference_id)
    if conference is None:
        raise ProviderError(404, 60, "conferencia não encontrada")
    return conference


def _require_active(conference: Conference) -> None:
    if conference.ended_at is not None:
        raise ProviderError(404, 80, "a conferencia não está ativa")


def _require_balance(simulation: Simulation) -> None:
    if simulation.scenario.no_balance:
        raise ProviderError(402, 9, "saldo insuficiente")


def _known_webhook(request: Request, simulation: Simulation) -> str:
    name: str = request.path_params["name"]
    names = simulation.scenario.webhook_names
    if name not in names:
        raise ProviderError(
            405, 11, f"o parametro webhook é inválido. Webhooks válidos: {', '.join(names)}"
        )
    return name


def _conference_in(request: Request) -> int | None:
    raw = request.path_params.get("conference_id")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    created: int | None = getattr(request.state, "conference_id", None)
    return created


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    parsed = _json_object_or_none(body)
    if parsed is None:
        raise ProviderError(400, 100, "requisição inválida: o JSON enviado está mal formado")
    return parsed


def _json_object_or_none(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _caller_id(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    caller_id = to_e164(raw)
    if caller_id is None:
        raise ProviderError(405, 11, _INVALID_NUMBER.format(field="bina"))
    return caller_id


def _recording_wish(raw: object, field: str) -> bool:
    """The docs' own example sends the string "true"; the provider takes it."""
    if raw is None or raw is False or raw in ("false", "0", 0):
        return False
    if raw is True or raw in ("true", "1", 1):
        return True
    raise ProviderError(405, 11, f"o parametro {field} é inválido")


def _is_web_address(url: object) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _path_as_sent(request: Request) -> str:
    """Before the trailing slash was dropped, to show which form the client used."""
    raw_path = request.scope.get("raw_path")
    return raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path


def _loggable(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:_LOGGED_BODY_CHARACTERS].decode("utf-8", errors="replace")
