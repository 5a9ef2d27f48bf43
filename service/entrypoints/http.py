"""The HTTP API (Starlette): conference commands in, conference state out, provider webhooks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from service import metrics
from service.domain.commands import (
    NUL_REFUSED,
    AddParticipantCommand,
    ConferenceCommand,
    CreateConference,
    ParticipantRequest,
    field_errors,
)
from service.domain.conference import AdditionRefused, ConferenceStatus
from service.domain.provider_ids import parse_id
from service.entrypoints.asyncapi import SCHEMA_MEDIA_TYPE, asyncapi_document, schema_file
from service.entrypoints.limits import ApiLimits, CallerAdmission, ConcurrencyLimit
from service.entrypoints.openapi import OPENAPI
from service.entrypoints.problems import Problem
from service.logging import get_logger
from service.ports import (
    AdditionRecord,
    CallerConferences,
    CommandPublisher,
    ConferenceFilter,
    IngressRecord,
    IngressStore,
    ParticipantRefused,
    WebhookInbox,
)

log = get_logger(__name__)

T = TypeVar("T")

_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_DEPENDENCY_RETRY_AFTER = 5
_WEBHOOK_RETRY_AFTER = 1
# Deeper than any body the API or the provider means; Postgres' jsonb and our walks stay cheap.
_MAX_JSON_DEPTH = 32
# One answer for every path that is not a route, a webhook path with a wrong secret included:
# nothing tells a prober which part was wrong.
_NO_SUCH_ROUTE = "no such resource"
# nginx's code for "the client closed the connection": never sent, only logged and counted.
CLIENT_CLOSED = 499


@dataclass
class ApiDeps:
    ingress: IngressStore
    conferences: CallerConferences
    webhooks: WebhookInbox
    publisher: CommandPublisher
    tokens_by_caller: dict[str, str]
    webhook_secret: str
    webhook_debounce_seconds: float = 1.0
    webhook_nudge_interval_seconds: float = 5.0
    max_body_bytes: int = 64 * 1024
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    draining: bool = False
    limits: ApiLimits = field(default_factory=ApiLimits)
    monotonic: Callable[[], float] = time.monotonic
    # The body model of this deploy; tests put two deploys' models side by side on one store.
    payload_model: type[CreateConference] = CreateConference
    # Adds to a conference without its own max_duration_seconds are refused past this.
    default_max_duration_seconds: int = 4 * 3600


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
            "/v1/conferences/{conference_id}/participants",
            api.add_participant,
            methods=["POST"],
            name="add_participant",
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
        Route("/asyncapi.json", api.asyncapi, methods=["GET"], name="asyncapi"),
        Route("/schemas/{name}", api.topic_schema, methods=["GET"], name="topic_schema"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            Problem: _problem_handler,
            ClientDisconnect: _client_disconnect_handler,
            HTTPException: _http_exception_handler,
            Exception: _unexpected_handler,
        },
    )
    # A redirect would echo the request's Host header, and the webhook's secret, in Location.
    app.router.redirect_slashes = False
    app.state.deps = deps
    return RequestLog(app)  # type: ignore[return-value]


class _Api:
    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        self.admission = CallerAdmission(deps.limits, deps.monotonic)
        self.webhook_slots = ConcurrencyLimit(deps.limits.webhook_max_concurrency)
        # Secrets are compared as digests: equal lengths, so the timing says nothing of theirs.
        self.token_digests = {
            caller: _digest(token) for caller, token in deps.tokens_by_caller.items()
        }
        self.webhook_secret_digest = _digest(deps.webhook_secret)

    async def create_conference(self, request: Request) -> Response:
        caller = self._caller(request)
        key = _idempotency_key(request)
        # Its strings are checked by the model, as the consumer checks commands from Kafka.
        body = await self._json_body(
            request,
            self.deps.max_body_bytes,
            self.deps.limits.body_timeout_seconds,
            strings_checked=False,
        )
        fingerprint = request_fingerprint(body)
        # A key seen before is answered as it was the first time, by any pod, whatever this
        # deploy's model says of the body now: not validated again, not charged again.
        earlier = await _dependency(self.deps.ingress.recall(caller, key), "recall")
        if earlier is None:
            payload = self._payload(body)
            command = ConferenceCommand(
                type="conference.create",
                command_id=uuid.uuid4(),
                conference_id=uuid.uuid4(),
                caller=caller,
                idempotency_key=key,
                requested_at=self.deps.clock(),
                payload=payload,
            )
            record = await self._remember_charged(caller, key, fingerprint, command)
            replayed = record.conference_id != command.conference_id
        else:
            record, replayed = earlier, True
        if record.body_sha256 != fingerprint and not _legacy_match(record, body):
            raise _key_reused()
        await self._publish(record.conference_id, record.command)
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

    async def add_participant(self, request: Request) -> Response:
        """One more participant for a running conference: a position reserved for its number
        (the store refuses what the conference cannot take), then the command on Kafka, as a
        create goes. A replay answers the first answer and reserves nothing."""
        caller = self._caller(request)
        conference_id = _conference_id(request)
        key = _idempotency_key(request)
        body = await self._json_body(
            request,
            self.deps.max_body_bytes,
            self.deps.limits.body_timeout_seconds,
            strings_checked=False,
        )
        # The conference is part of the request: the same key and body for another one differ.
        fingerprint = request_fingerprint({"conference_id": str(conference_id), "body": body})
        earlier = await _dependency(self.deps.ingress.recall_addition(caller, key), "recall")
        if earlier is None:
            try:
                participant = ParticipantRequest.model_validate(body)
            except ValidationError as error:
                raise Problem(
                    422,
                    "the body has invalid fields",
                    kind="validation",
                    errors=field_errors(error),
                ) from None
            command = AddParticipantCommand(
                type="participant.add",
                command_id=uuid.uuid4(),
                conference_id=conference_id,
                caller=caller,
                idempotency_key=key,
                requested_at=self.deps.clock(),
                payload=participant,
            )
            record = await self._reserve_charged(caller, key, fingerprint, command)
            replayed = record.command["command_id"] != str(command.command_id)
        else:
            record, replayed = earlier, True
        if record.body_sha256 != fingerprint:
            raise _key_reused()
        await self._publish(record.conference_id, record.command)
        conference = f"/v1/conferences/{record.conference_id}"
        headers = {"Location": conference}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(
            {
                "conference_id": str(record.conference_id),
                "position": record.position,
                "number": record.command["payload"]["number"],
                "dial_state": "pending",
                "idempotency_key": key,
                "links": {"conference": conference},
            },
            status_code=202,
            headers=headers,
        )

    async def _reserve_charged(
        self, caller: str, key: str, fingerprint: str, command: AddParticipantCommand
    ) -> AdditionRecord:
        """The add's dial charged to the caller, then its position reserved; refunded when it
        is refused or turns out to be a replay."""
        self._charge(caller, 1)
        try:
            record = await self.deps.ingress.reserve_participant(
                caller, key, fingerprint, command, self.deps.default_max_duration_seconds
            )
        except ParticipantRefused as refused:
            self.admission.release_participants(caller, 1)
            status = _REFUSAL_STATUS[refused.reason]
            # Still being accepted: a matter of moments.
            retry = 1 if refused.reason is AdditionRefused.NOT_READY else None
            raise Problem(
                status, str(refused), kind=refused.reason.value, retry_after=retry
            ) from None
        except Exception as error:
            self.admission.release_participants(caller, 1)
            log.error("ingress_store_failed", error=type(error).__name__)
            raise Problem(
                503, "storage is unavailable; retry later", retry_after=_DEPENDENCY_RETRY_AFTER
            ) from None
        if record.command["command_id"] != str(command.command_id):
            self.admission.release_participants(caller, 1)
        return record

    def _charge(self, caller: str, dials: int) -> None:
        """Charge `dials` against the caller's participants a minute, or answer 429."""
        wait = self.admission.reserve_participants(caller, dials)
        if wait:
            raise Problem(
                429,
                f"over {self.deps.limits.participants_per_minute} participants a minute "
                "for this caller",
                kind="participant-rate-limited",
                retry_after=wait,
            )

    async def _publish(self, conference_id: uuid.UUID, command: dict[str, Any]) -> None:
        """The command as stored, on Kafka. A replay publishes it again: the first attempt may
        have failed after the key was stored, and the worker drops what it accepted before."""
        try:
            await self.deps.publisher.publish_command(conference_id, command)
        except Exception as error:
            log.error("command_publish_failed", error=type(error).__name__)
            raise Problem(
                503,
                "the command bus is unavailable; retry with the same key",
                retry_after=_DEPENDENCY_RETRY_AFTER,
            ) from None

    def _payload(self, body: Any) -> CreateConference:
        try:
            return self.deps.payload_model.model_validate(body)
        except ValidationError as error:
            raise Problem(
                422, "the body has invalid fields", kind="validation", errors=field_errors(error)
            ) from None

    async def _remember_charged(
        self, caller: str, key: str, fingerprint: str, command: ConferenceCommand
    ) -> IngressRecord:
        """Store a new key's command, its dials charged to the caller first, so that a refused
        request stores nothing; refunded when it turns out to be a replay after all (the same
        key arriving at the same moment, here or at another pod)."""
        charged = len(command.payload.participants)
        self._charge(caller, charged)
        try:
            record = await self.deps.ingress.remember(caller, key, fingerprint, command)
        except Exception as error:
            self.admission.release_participants(caller, charged)
            log.error("ingress_store_failed", error=type(error).__name__)
            raise Problem(
                503, "storage is unavailable; retry later", retry_after=_DEPENDENCY_RETRY_AFTER
            ) from None
        if record.conference_id != command.conference_id:
            self.admission.release_participants(caller, charged)
        return record

    async def get_conference(self, request: Request) -> Response:
        caller = self._caller(request)
        conference_id = _conference_id(request)
        view = await _dependency(self.deps.conferences.get(caller, conference_id), "get")
        if view is None:
            raise Problem(404, "no such conference")
        return JSONResponse(view)

    async def cancel_conference(self, request: Request) -> Response:
        caller = self._caller(request)
        conference_id = _conference_id(request)
        status = await _dependency(
            self.deps.conferences.request_cancel(caller, conference_id), "cancel"
        )
        if status is None:
            raise Problem(404, "no such conference")
        return JSONResponse(
            {"id": str(conference_id), "status": status, "cancel_requested": True},
            status_code=202,
        )

    async def list_conferences(self, request: Request) -> Response:
        caller = self._caller(request)
        filters, limit = _list_query(request)
        views, after = await _dependency(self.deps.conferences.find(caller, filters, limit), "find")
        return JSONResponse(
            {"items": views, "next_cursor": None if after is None else _encode_cursor(after)}
        )

    async def provider_webhook(self, request: Request) -> Response:
        secret = request.path_params["secret"]
        if not hmac.compare_digest(_digest(secret), self.webhook_secret_digest):
            raise Problem(404, _NO_SUCH_ROUTE)
        # The body is read whole, within a short deadline, before a slot is taken: a slot is
        # held only while the database is, and a slow sender holds nothing but its socket.
        raw = await _read_body(
            request,
            self.deps.limits.webhook_max_body_bytes,
            self.deps.limits.webhook_body_timeout_seconds,
        )
        with self.webhook_slots.hold() as admitted:
            if not admitted:
                raise Problem(
                    503,
                    "too many callbacks at once; retry shortly",
                    kind="webhooks-saturated",
                    retry_after=_WEBHOOK_RETRY_AFTER,
                )
            return await self._record_webhook(raw)

    async def _record_webhook(self, raw: bytes) -> Response:
        # The body is the provider's (or anyone's who has the URL): only ids that look like the
        # provider's are used, and the rest is kept as data, never interpreted.
        body = _parse_json(raw, strings_checked=True)
        if not isinstance(body, dict):
            raise Problem(422, "a webhook body must be a JSON object", kind="validation")
        conference_ref = _provider_id(body.get("conferencia_id"))
        call_ref = _provider_id(body.get("chamada_id", body.get("id")))
        # Someone joining settles nothing; every other callback may mean a call has ended.
        event = body.get("evento_conferencia")
        joined = isinstance(event, str) and event.strip().lower() == "entrou"
        matched = await _dependency(
            self.deps.webhooks.record_webhook(
                conference_ref,
                call_ref,
                body,
                look_in=None if joined else self.deps.webhook_debounce_seconds,
                nudge_interval=self.deps.webhook_nudge_interval_seconds,
            ),
            "record_webhook",
        )
        metrics.WEBHOOKS_RECEIVED.labels(matched=str(matched).lower()).inc()
        return Response(status_code=204)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.deps.draining:
            return JSONResponse({"status": "draining", "checks": {}}, status_code=503)
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

    async def asyncapi(self, request: Request) -> Response:
        return JSONResponse(asyncapi_document())

    async def topic_schema(self, request: Request) -> Response:
        """One of the topics' JSON Schemas, the file as it is; any other name is not found."""
        content = schema_file(request.path_params["name"])
        if content is None:
            raise Problem(404, _NO_SUCH_ROUTE)
        return Response(content, media_type=SCHEMA_MEDIA_TYPE)

    def _caller(self, request: Request) -> str:
        """The authenticated caller, once its request budget admits this request."""
        caller = self._authenticate(request)
        wait = self.admission.admit_request(caller)
        if wait:
            raise Problem(
                429,
                f"over {self.deps.limits.requests_per_second:g} requests a second for this caller",
                kind="rate-limited",
                retry_after=wait,
            )
        return caller

    def _authenticate(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        caller = None
        if scheme.lower() == "bearer" and token:
            presented = _digest(token)
            # Compare against every token, always, so timing says nothing about which is close.
            for name, expected in self.token_digests.items():
                if hmac.compare_digest(presented, expected):
                    caller = name
        if caller is None:
            # The same answer for a missing, malformed or unknown token: nothing to probe.
            raise Problem(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        structlog.contextvars.bind_contextvars(caller=caller)
        return caller

    async def _json_body(
        self, request: Request, max_bytes: int, timeout: float, strings_checked: bool = True
    ) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Problem(415, "send the body as application/json")
        return _parse_json(await _read_body(request, max_bytes, timeout), strings_checked)


async def _read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The whole body, at most `max_bytes` (413) and all of it within `timeout` seconds (408)."""
    # A body too large is answered and the connection kept: the server discards what is still
    # coming (nothing of it is held), so the client can read its 413. A body too slow is cut:
    # the connection is closed, or it would hold its socket as long as the client likes.
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise Problem(413, f"the body must be at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise Problem(413, f"the body must be at most {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Problem(
            408,
            f"the body must arrive within {timeout:g} s",
            kind="body-timeout",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _parse_json(raw: bytes, strings_checked: bool) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Problem(400, "the body is not valid JSON", kind="malformed-json") from None
    # Only a body holding an escaped NUL or more openers than the depth limit can be unfit.
    unfit = _unstorable(body, strings_checked) if _may_be_unstorable(raw, strings_checked) else None
    if unfit is not None:
        raise Problem(
            422,
            "the body has invalid fields",
            kind="validation",
            errors=[{"field": unfit[0], "message": unfit[1]}],
        )
    return body


def _key_reused() -> Problem:
    return Problem(
        422,
        "this Idempotency-Key was used before with a different body",
        kind="idempotency-key-reused",
    )


# What each refusal of an add is answered with: the conference is not there (404), it takes no
# one now (409), or this number cannot join it (422).
_REFUSAL_STATUS: dict[AdditionRefused, int] = {
    AdditionRefused.UNKNOWN_CONFERENCE: 404,
    AdditionRefused.NOT_READY: 409,
    AdditionRefused.FINAL: 409,
    AdditionRefused.CANCELED: 409,
    AdditionRefused.PAST_MAX_DURATION: 409,
    AdditionRefused.ROOM_ENDED: 409,
    AdditionRefused.DUPLICATE_NUMBER: 422,
    AdditionRefused.FULL: 422,
}


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(
            400,
            "the Idempotency-Key header is required: 1 to 255 printable ASCII characters",
            kind="idempotency-key-required",
        )
    return key


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def request_fingerprint(body: Any) -> str:
    """What makes two requests with one Idempotency-Key the same request: the JSON body as the
    caller sent it, in a canonical form (keys sorted, no whitespace), before any model reads it,
    so that a deploy that changes the model (a new defaulted field, another normalization)
    never turns an honest retry into a 422."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _legacy_match(record: IngressRecord, body: Any) -> bool:
    """Keys stored before fingerprints were taken of the request (up to the key retention of
    7 days after that deploy) hold the fingerprint of the normalized payload instead."""
    try:
        payload = CreateConference.model_validate(body)
    except ValidationError:
        return False
    normalized = payload.model_dump(mode="json")
    legacy = hashlib.sha256(orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return hmac.compare_digest(record.body_sha256, legacy)


async def _dependency(call: Awaitable[T], operation: str) -> T:
    """Await a store call; a failing dependency is a 503 with Retry-After, never its message."""
    try:
        return await call
    except Exception as error:
        log.error("dependency_failed", operation=operation, error=type(error).__name__)
        raise Problem(
            503, "a dependency is unavailable; retry later", retry_after=_DEPENDENCY_RETRY_AFTER
        ) from None


def _may_be_unstorable(raw: bytes, strings: bool) -> bool:
    """JSON writes a NUL only as the escape `\\u0000`, and nests no deeper than its count of
    `[` and `{`: a body with neither cannot be unfit, and need not be walked."""
    return (strings and b"\\u0000" in raw) or raw.count(b"[") + raw.count(b"{") > _MAX_JSON_DEPTH


def _unstorable(value: Any, strings: bool) -> tuple[str, str] | None:
    """Where a parsed JSON body nests deeper than any real body or, with `strings`, holds what
    Postgres cannot store (a NUL character, the model's rule for bodies stored as they come):
    (field, message), else None. Iterative: depth costs no stack."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        item, path, depth = pending.pop()
        if depth > _MAX_JSON_DEPTH:
            return path or "body", f"nested more than {_MAX_JSON_DEPTH} levels"
        if isinstance(item, str):
            if strings and "\x00" in item:
                return path or "body", NUL_REFUSED
        elif isinstance(item, dict):
            for name, child in item.items():
                if strings and "\x00" in name:
                    return path or "body", f"names {NUL_REFUSED}"
                pending.append((child, f"{path}.{name}" if path else name, depth + 1))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                pending.append((child, f"{path}.{index}" if path else str(index), depth + 1))
    return None


_PROVIDER_ID = re.compile(r"[0-9]{1,19}")


def _provider_id(value: object) -> str | None:
    """A provider id is a positive number or a string of ASCII digits; anything else (floats,
    huge numbers, text, objects) is ignored rather than trusted."""
    if isinstance(value, str):
        value = value.strip()
        if not _PROVIDER_ID.fullmatch(value):
            return None
    elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        return None
    return parse_id(value)


def _conference_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["conference_id"])
    except ValueError:
        raise Problem(404, "no such conference") from None


_LIST_PARAMETERS = {"status", "reference", "created_from", "created_to", "limit", "cursor"}
_LIMIT = re.compile(r"[0-9]{1,3}")
_MAX_REFERENCE = 200


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
        parsed = _moment(raw)
        if parsed is None:
            errors.append({"field": name, "message": "must be an ISO 8601 date-time"})
        return parsed

    status = query.get("status")
    if status is not None and status not in {s.value for s in ConferenceStatus}:
        errors.append({"field": "status", "message": "unknown status"})
    reference = query.get("reference")
    if reference is not None and (len(reference) > _MAX_REFERENCE or "\x00" in reference):
        errors.append({"field": "reference", "message": "at most 200 characters, no NUL"})
    limit_text = query.get("limit", "50")
    limit = int(limit_text) if _LIMIT.fullmatch(limit_text) else 0
    if not 1 <= limit <= 200:
        errors.append({"field": "limit", "message": "must be a whole number from 1 to 200"})
    after = None
    if "cursor" in query:
        after = _decode_cursor(query["cursor"])
        if after is None:
            errors.append({"field": "cursor", "message": "not a cursor this API gave"})
    filters = ConferenceFilter(
        status=status,
        reference=reference,
        created_from=moment("created_from"),
        created_to=moment("created_to"),
        after=after,
    )
    if errors:
        raise Problem(422, "the query has invalid parameters", kind="validation", errors=errors)
    return filters, limit


_LEAP_SECOND = re.compile(r"(T\d{2}:\d{2}:)60")


def _moment(text: str) -> datetime | None:
    """An RFC 3339 / ISO 8601 date-time in UTC (UTC when it has no offset), or None when it is
    not one or cannot be expressed in UTC (year 1 at +05:00). A leap second (:60) counts as the
    next second, which Python's datetime cannot hold."""
    text = text.upper()
    leap = _LEAP_SECOND.search(text)
    if leap:
        text = text[: leap.start(1)] + leap.group(1) + "59" + text[leap.end() :]
    try:
        parsed = datetime.fromisoformat(text)
        parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return parsed + timedelta(seconds=1) if leap else parsed
    except (ValueError, OverflowError):
        return None


def _encode_cursor(after: tuple[datetime, uuid.UUID]) -> str:
    raw = orjson.dumps([after[0].isoformat(), str(after[1])])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    """A cursor is ours only if it decodes to [date-time, uuid]; anything else is None."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = orjson.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return None
    if not (
        isinstance(decoded, list)
        and len(decoded) == 2
        and all(isinstance(part, str) for part in decoded)
    ):
        return None
    moment = _moment(decoded[0])
    try:
        conference_id = uuid.UUID(decoded[1])
    except ValueError:
        return None
    return None if moment is None else (moment, conference_id)


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # Starlette's own: 404 (no route) and 405, whose Allow it takes from the first route
    # matching the path only; a path has a route per method here, so Allow lists them all.
    if exc.status_code == 404:
        return Problem(404, _NO_SUCH_ROUTE).response()
    if exc.status_code == 405:
        allowed = sorted(_methods_for(request.scope, request.app.router.routes))
        return Problem(
            405, "this path does not take that method", headers={"Allow": ", ".join(allowed)}
        ).response()
    return Problem(exc.status_code, str(exc.detail), headers=exc.headers).response()


def _methods_for(scope: Scope, routes: list[Any]) -> set[str]:
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


async def _client_disconnect_handler(request: Request, exc: Exception) -> Response:
    # The client went away mid-body: nothing is wrong here, and there is no one to answer.
    # The status is what the request log and the metric record.
    log.info("client_disconnected")
    return Response(status_code=CLIENT_CLOSED)


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    # The trace goes to the log only; the caller learns nothing of how the service works.
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
            route = _route_name(scope)
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


def _route_name(scope: Scope) -> str:
    """The route that served the request, as the router left it in the scope: the one matching
    path and method, else the first matching the path (a 405), else "unmatched"."""
    route = scope.get("route")
    return str(getattr(route, "name", None) or "unmatched")
