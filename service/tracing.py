"""OpenTelemetry tracing: off unless the `OTEL_*` environment asks for it, and then one trace from
a caller's request through Kafka to the worker, with every later step of the conference linked
to it.

What makes spans here:
- the api: a server span per request (an incoming `traceparent` is honoured), and a producer
  span per command sent, whose context travels in the message's `traceparent` header;
- the worker: a consumer `process` span around the handling of each command (a child of the
  producer span), a span per schedule step (dial, poll) linked to the trace of the conference's
  command, a producer span per event sent, linked the same way, and a client span per provider
  request and per Postgres query.

Spans carry no phone number and no secret: no request or message bodies, no query parameters,
the route template instead of the path (the webhook path holds its secret), and an exception's
type but never its message (a provider error can echo a number). The conference keeps the
`traceparent` of its command (Postgres `conference.trace_parent`), which is what the later steps
link to. Attribute names follow the semantic conventions pinned below.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import Link, Span, SpanKind, StatusCode

from service.settings import SettingsError

# Semantic conventions 1.44.0 (opentelemetry-semantic-conventions 0.66b2, locked in uv.lock):
# every attribute name below is that version's.
SCHEMA_URL = Schemas.V1_44_0.value

_tracer = trace.get_tracer("conference-service", schema_url=SCHEMA_URL)
_enabled = False


def configure(role: str) -> bool:
    """Install the SDK for this process when tracing is configured: `OTEL_TRACES_EXPORTER` set
    (otlp or console), or an OTLP endpoint given, and not `OTEL_SDK_DISABLED`. The SDK reads the
    rest (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
    `OTEL_EXPORTER_OTLP_*`). Whether tracing is on; off, every span here is a no-op."""
    global _enabled
    if _enabled:
        return True  # `service dev` runs the api and the worker in one process
    env = os.environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if disabled or exporter_name == "none" or not (exporter_name or endpoint):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", f"conference-{role}")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter_name or "otlp")))
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def enabled() -> bool:
    """Whether this process traces: what costs something even as a no-op (a query logger on
    every connection, a wrapper around the api) is installed only then."""
    return _enabled


def _exporter(name: str) -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp" or protocol not in ("", "http/protobuf"):
        # The image ships the OTLP/HTTP exporter only; gRPC would fail quietly at the first
        # export, so it is refused at start instead.
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER={name!r} with protocol {protocol or 'http/protobuf'!r} is not"
            " supported: use otlp over http/protobuf (or console)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def shutdown() -> None:
    """Flush what is buffered; a process that exits without it loses its last spans."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


# --- carrying a trace across Kafka and Postgres ----------------------------------------------


Headers = Sequence[tuple[str | bytes, bytes]]


def context_from_headers(headers: Headers | None) -> Context:
    """The trace context a message or a request carries (Kafka and ASGI headers alike)."""
    carrier = {
        (name.decode("latin-1") if isinstance(name, bytes) else name).lower(): value.decode(
            "latin-1"
        )
        for name, value in headers or ()
        if value is not None
    }
    return propagate.extract(carrier)


def trace_headers(span: Span) -> list[tuple[str, bytes]]:
    """`traceparent` (and `tracestate`) naming `span`; none when tracing is off."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return [(name, value.encode()) for name, value in carrier.items()]


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, for a conference to keep; None when off."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def _links(traceparent: str | None) -> list[Link]:
    if not traceparent:
        return []
    linked = trace.get_current_span(propagate.extract({"traceparent": traceparent}))
    context = linked.get_span_context()
    return [Link(context)] if context.is_valid else []


def _failed(span: Span, error: BaseException) -> None:
    # The type only: a message can hold what a span must not (a number a provider echoed).
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(StatusCode.ERROR)


@contextlib.contextmanager
def _span(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    context: Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=dict(attributes),
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as error:
            _failed(span, error)
            raise


# --- the spans ---------------------------------------------------------------------------------


def _messaging(topic: str, operation: str, key: str) -> dict[str, Any]:
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.kafka.message.key": key,
    }


def sending(
    topic: str, key: str, *, linked_to: str | None = None
) -> contextlib.AbstractContextManager[Span]:
    """A producer span for one message; its `trace_headers` go into the message. A child of the
    current span, or, given `linked_to` (a conference's traceparent), a trace of its own linked
    to that one: an event is sent long after the request that caused it has ended."""
    return _span(
        f"send {topic}",
        SpanKind.PRODUCER,
        _messaging(topic, "send", key),
        context=None if linked_to is None else Context(),
        links=_links(linked_to),
    )


def processing(
    topic: str, key: str, headers: Headers | None, group: str
) -> contextlib.AbstractContextManager[Span]:
    """The consumer span around handling one command, a child of the span that sent it."""
    attributes = _messaging(topic, "process", key)
    if group:
        attributes["messaging.consumer.group.name"] = group
    return _span(
        f"process {topic}", SpanKind.CONSUMER, attributes, context=context_from_headers(headers)
    )


def step(
    name: str, conference_id: str, traceparent: str | None
) -> contextlib.AbstractContextManager[Span]:
    """A schedule step of one conference: a trace of its own (a conference lives for hours),
    linked to the trace of the command that asked for it."""
    return _span(
        name,
        SpanKind.INTERNAL,
        {"conference.id": conference_id},
        context=Context(),
        links=_links(traceparent),
    )


def provider_request(
    method: str, template: str, base_url: str
) -> contextlib.AbstractContextManager[Span]:
    """A client span per provider request, named by its route template (no ids, no bodies)."""
    return _span(
        f"{method} {template}",
        SpanKind.CLIENT,
        {"http.request.method": method, "url.template": template, **_server(base_url)},
    )


@functools.cache
def _server(base_url: str) -> dict[str, Any]:
    server = urlsplit(base_url)
    port = server.port or (443 if server.scheme == "https" else 80)
    return {"server.address": server.hostname or "", "server.port": port}


def answered(span: Span, status: int, error_from: int) -> None:
    """An HTTP answer's status on its span; from `error_from` on, the span failed (a client's
    4xx is its failure, a server's is the caller's)."""
    span.set_attribute("http.response.status_code", status)
    if status >= error_from:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)


def record_query(record: Any) -> None:
    """An asyncpg query logger: a client span per query, ended when the query ended. The SQL is
    the statement with its `$n` placeholders; the parameters are never recorded."""
    ended = time.time_ns()
    query = " ".join(str(record.query).split())
    operation = query.split(" ", 1)[0].upper() if query else "QUERY"
    address = record.conn_addr
    host, port = address[:2] if isinstance(address, tuple) else (address or "", 0)
    span = _tracer.start_span(
        operation,
        kind=SpanKind.CLIENT,
        start_time=ended - int(record.elapsed * 1e9),
        attributes={
            "db.system.name": "postgresql",
            "db.namespace": str(getattr(record.conn_params, "database", "") or ""),
            "db.operation.name": operation,
            "db.query.text": query,
            "server.address": str(host),
            "server.port": int(port or 0),
        },
    )
    if record.exception is not None:
        _failed(span, record.exception)
    span.end(end_time=ended)


class TracedApp:
    """A server span per HTTP request around an ASGI app, named by the route template the router
    matched (`POST /v1/conferences`), continuing the caller's trace when it sent `traceparent`."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        attributes = {"http.request.method": method, "url.scheme": scope.get("scheme", "http")}
        context = context_from_headers(scope.get("headers"))
        with _span(method, SpanKind.SERVER, attributes, context=context) as span:

            async def send_traced(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    answered(span, int(message["status"]), error_from=500)
                await send(message)

            try:
                await self._app(scope, receive, send_traced)
            finally:
                # The router leaves the route it matched in the scope; never the path itself,
                # which for the webhooks holds their secret.
                template = getattr(scope.get("route"), "path", None)
                if template:
                    span.set_attribute("http.route", template)
                    span.update_name(f"{method} {template}")


def traced(app: Any) -> Any:
    """The api app, with a server span per request when tracing is on."""
    return TracedApp(app) if _enabled else app
