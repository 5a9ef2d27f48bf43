"""The HTTP API (Starlette): conference commands in, conference state out, provider webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.adapters.totalvoice import parse_id
from service.domain.commands import ConferenceCommand, CreateConference, field_errors
from service.domain.conference import ConferenceStatus
from service.entrypoints.openapi import OPENAPI
from service.entrypoints.problems import Problem
from service.logging import get_logger
from service.ports import (
    CallerConferences,
    CommandPublisher,
    ConferenceFilter,
    IngressStore,
    WebhookInbox,
)

log = get_logger(__name__)

_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_DEPENDENCY_RETRY_AFTER = 5


@dataclass
class ApiDeps:
    ingress: IngressStore
    conferences: CallerConferences
    webhooks: WebhookInbox
    publisher: CommandPublisher
    tokens_by_caller: dict[str, str]
    webhook_secret: str
    webhook_debounce_seconds: float = 1.0
    max_body_bytes: int = 64 * 1024
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    draining: bool = False


def create_app(deps: ApiDeps) -> Starlette:
    api = _Api(deps)
    routes = [
        Route("/v1/conferences", api.create_conference, methods=["POST"], name="create_conference"),
        Route("/v1/conferences", api.list_conferences, methods=["GET"], name="list_conferences"),
        Route(
            "/v1/conferences/{conference_id}",
            api.get_conference,
            methods=["GET"],
            name="get_conference",
        ),
        Route(
            "/v1/conferences/{conference_id}",
            api.cancel_conference,
            methods=["DELETE"],
            name="cancel_conference",
        ),
        Route(
            "/v1/webhooks/totalvoice/{secret}",
            api.provider_webhook,
            methods=["POST"],
            name="provider_webhook",
        ),
        Route("/healthz", api.healthz, methods=["GET"], name="healthz"),
        Route("/readyz", api.readyz, methods=["GET"], name="readyz"),
        Route("/metrics", api.metrics, methods=["GET"], name="metrics"),
        Route("/openapi.json", api.openapi, methods=["GET"], name="openapi"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            Problem: _problem_handler,
            HTTPException: _http_exception_handler,
            Exception: _unexpected_handler,
        },
    )
    app.state.deps = deps
    return RequestLog(app)  # type: ignore[return-value]


class _Api:
    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps

    async def create_conference(self, request: Request) -> Response:
        caller = self._authenticate(request)
        key = request.headers.get("idempotency-key")
        if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
            raise Problem(
                400,
                "the Idempotency-Key header is required: 1 to 255 printable ASCII characters",
                kind="idempotency-key-required",
            )
        body = await self._json_body(request)
        try:
            payload = CreateConference.model_validate(body)
        except ValidationError as error:
            raise Problem(
                422, "the body has invalid fields", kind="validation", errors=field_errors(error)
            ) from None
        canonical = payload.model_dump(mode="json")
        body_sha256 = hashlib.sha256(
            orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        command = ConferenceCommand(
            type="conference.create",
            command_id=uuid.uuid4(),
            conference_id=uuid.uuid4(),
            caller=caller,
            idempotency_key=key,
            requested_at=self.deps.clock(),
            payload=payload,
        )
        try:
            record = await self.deps.ingress.remember(caller, key, body_sha256, command)
        except Exception as error:
            log.error("ingress_store_failed", error=type(error).__name__)
            raise Problem(
                503, "storage is unavailable; retry later", retry_after=_DEPENDENCY_RETRY_AFTER
            ) from None
        if record.body_sha256 != body_sha256:
            raise Problem(
                422,
                "this Idempotency-Key was used before with a different body",
                kind="idempotency-key-reused",
            )
        replayed = record.conference_id != command.conference_id
        stored = ConferenceCommand.model_validate(record.command)
        # A replay publishes again: the first attempt may have failed after the key was stored,
        # and the worker drops a command it has already accepted.
        try:
            await self.deps.publisher.publish_command(stored)
        except Exception as error:
            log.error("command_publish_failed", error=type(error).__name__)
            raise Problem(
                503,
                "the command bus is unavailable; retry with the same key",
                retry_after=_DEPENDENCY_RETRY_AFTER,
            ) from None
        if not replayed:
            metrics.COMMANDS_ACCEPTED.inc()
        location = f"/v1/conferences/{record.conference_id}"
        headers = {"Location": location}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(
            {
                "id": str(record.conference_id),
                "status": "accepted",
                "idempotency_key": key,
                "created_at": record.created_at.isoformat(),
                "links": {"self": location},
            },
            status_code=202,
            headers=headers,
        )

    async def get_conference(self, request: Request) -> Response:
        caller = self._authenticate(request)
        view = await self.deps.conferences.get(caller, _conference_id(request))
        if view is None:
            raise Problem(404, "no such conference")
        return JSONResponse(view)

    async def cancel_conference(self, request: Request) -> Response:
        caller = self._authenticate(request)
        conference_id = _conference_id(request)
        status = await self.deps.conferences.request_cancel(caller, conference_id)
        if status is None:
            raise Problem(404, "no such conference")
        return JSONResponse(
            {"id": str(conference_id), "status": status, "cancel_requested": True},
            status_code=202,
        )

    async def list_conferences(self, request: Request) -> Response:
        caller = self._authenticate(request)
        filters, limit = _list_query(request)
        views, after = await self.deps.conferences.find(caller, filters, limit)
        return JSONResponse(
            {"items": views, "next_cursor": None if after is None else _encode_cursor(after)}
        )

    async def provider_webhook(self, request: Request) -> Response:
        if not hmac.compare_digest(
            request.path_params["secret"].encode(), self.deps.webhook_secret.encode()
        ):
            raise Problem(404, "not found")
        body = await self._json_body(request, require_json_type=False)
        if not isinstance(body, dict):
            raise Problem(422, "a webhook body must be a JSON object", kind="validation")
        conference_ref = parse_id(body.get("conferencia_id"))
        call_ref = parse_id(body.get("chamada_id", body.get("id")))
        # Someone joining settles nothing; every other callback may mean a call has ended.
        joined = str(body.get("evento_conferencia", "")).strip().lower() == "entrou"
        matched = await self.deps.webhooks.record_webhook(
            conference_ref,
            call_ref,
            body,
            look_in=None if joined else self.deps.webhook_debounce_seconds,
        )
        metrics.WEBHOOKS_RECEIVED.labels(matched=str(matched).lower()).inc()
        return Response(status_code=204)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.deps.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        checks: dict[str, str] = {}
        for name, ping in (
            ("postgres", self.deps.ingress.ping),
            ("kafka", self.deps.publisher.ping),
        ):
            try:
                await ping()
                checks[name] = "ok"
            except Exception as error:
                checks[name] = type(error).__name__
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)

    def _authenticate(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        caller = None
        if scheme.lower() == "bearer" and token:
            # Compare against every token, always, so timing says nothing about which is close.
            for name, expected in self.deps.tokens_by_caller.items():
                if hmac.compare_digest(token.encode(), expected.encode()):
                    caller = name
        if caller is None:
            raise Problem(401, "a valid bearer token is required")
        structlog.contextvars.bind_contextvars(caller=caller)
        return caller

    async def _json_body(self, request: Request, require_json_type: bool = True) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if require_json_type and content_type != "application/json":
            raise Problem(415, "send the body as application/json")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.deps.max_body_bytes:
            raise Problem(413, f"the body must be at most {self.deps.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.deps.max_body_bytes:
                raise Problem(413, f"the body must be at most {self.deps.max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise Problem(400, "the body is not valid JSON", kind="malformed-json") from None


def _conference_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["conference_id"])
    except ValueError:
        raise Problem(404, "no such conference") from None


_LIST_PARAMETERS = {"status", "reference", "created_from", "created_to", "limit", "cursor"}


def _list_query(request: Request) -> tuple[ConferenceFilter, int]:
    query = request.query_params
    errors = [
        {"field": name, "message": "unknown query parameter"}
        for name in query
        if name not in _LIST_PARAMETERS
    ]

    def moment(name: str) -> datetime | None:
        raw = query.get(name)
        if raw is None:
            return None
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            errors.append({"field": name, "message": "must be an ISO 8601 date-time"})
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    status = query.get("status")
    if status is not None and status not in {s.value for s in ConferenceStatus}:
        errors.append({"field": "status", "message": "unknown status"})
    limit_text = query.get("limit", "50")
    limit = int(limit_text) if limit_text.isdigit() else 0
    if not 1 <= limit <= 200:
        errors.append({"field": "limit", "message": "must be a whole number from 1 to 200"})
    after = None
    if "cursor" in query:
        after = _decode_cursor(query["cursor"])
        if after is None:
            errors.append({"field": "cursor", "message": "not a cursor this API gave"})
    filters = ConferenceFilter(
        status=status,
        reference=query.get("reference"),
        created_from=moment("created_from"),
        created_to=moment("created_to"),
        after=after,
    )
    if errors:
        raise Problem(422, "the query has invalid parameters", kind="validation", errors=errors)
    return filters, limit


def _encode_cursor(after: tuple[datetime, uuid.UUID]) -> str:
    raw = orjson.dumps([after[0].isoformat(), str(after[1])])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, conference_id = orjson.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(moment), uuid.UUID(conference_id)
    except (ValueError, TypeError):
        return None


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return Problem(exc.status_code, str(exc.detail)).response()


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    log.exception("request_failed")
    return Problem(500, "the request could not be completed").response()


class RequestLog:
    """One summary line and one metric sample per request, by route template: the webhook path
    carries a secret, so raw paths are never logged."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        structlog.contextvars.clear_contextvars()
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = _route_name(self.app, scope)
            elapsed = time.perf_counter() - started
            metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).observe(elapsed)
            if route not in ("healthz", "readyz", "metrics"):
                log.info(
                    "request_handled",
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )


def _route_name(app: ASGIApp, scope: Scope) -> str:
    for route in getattr(app, "routes", []):
        match, _ = route.matches(scope)
        if match.name != "NONE":
            return str(route.name)
    return "unmatched"
