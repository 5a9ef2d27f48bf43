"""One trace from a caller's request to the final event, seen by an OTLP/HTTP collector that the
test runs itself: the spans are what the api and worker processes exported, decoded from the
wire, not anything the code under test reports about itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.e2e.conftest import API_TOKEN, SIM_TOKEN, WEBHOOK_SECRET, Base, Lane, open_lane
from tests.e2e.test_cloudevents import headers, records_of, values
from tests.waiting import eventually

NUMBERS = ("4832830151", "48999990000")
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"


def _text(value: AnyValue) -> list[str]:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [t for v in value.array_value.values for t in _text(v)]
    if kind == "kvlist_value":
        return [t for kv in value.kvlist_value.values for t in _text(kv.value)]
    return [str(getattr(value, kind))] if kind else []


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _text(kv.value)[0] if _text(kv.value) else None for kv in pairs}


@dataclass
class Exported:
    service: str
    schema_url: str
    span: SpanProto

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return _attributes(self.span.attributes)

    @property
    def linked_traces(self) -> set[str]:
        return {link.trace_id.hex() for link in self.span.links}

    def texts(self) -> list[str]:
        """Every value this span carries: its attributes, its events' and its links'."""
        pairs: list[KeyValue] = [
            *self.span.attributes,
            *(kv for event in self.span.events for kv in event.attributes),
            *(kv for link in self.span.links for kv in link.attributes),
        ]
        return [self.span.name, *(t for kv in pairs for t in _text(kv.value))]


class Collector:
    """An OTLP/HTTP trace receiver (POST /v1/traces, protobuf)."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self.resource_texts: list[str] = []

    async def receive(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            self.resource_texts.extend(
                t for kv in resource_spans.resource.attributes for t in _text(kv.value)
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        Exported(resource["service.name"], scope_spans.schema_url, span)
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def one(self, **where: Any) -> Exported | None:
        found = [s for s in self.spans if all(_matches(s, k, v) for k, v in where.items())]
        assert len(found) <= 1, [s.span.name for s in found]
        return found[0] if found else None


def _matches(span: Exported, key: str, expected: Any) -> bool:
    actual = span.span.name if key == "name" else getattr(span, key)
    return bool(actual == expected)


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield received, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def traced_lane(base: Base, collector: tuple[Collector, str]) -> AsyncIterator[Lane]:
    lane = await open_lane(
        base,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector[1],
        OTEL_BSP_SCHEDULE_DELAY="200",
        NO_PROXY="127.0.0.1,localhost",
    )
    yield lane
    assert not await lane.close()


async def test_one_trace_from_the_request_to_the_final_event_without_personal_data(
    traced_lane: Lane, collector: tuple[Collector, str]
) -> None:
    received, _ = collector
    lane = traced_lane
    await lane.register_webhooks()
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    async with lane.api() as api:
        response = await api.post(
            "/v1/conferences",
            headers={
                "Idempotency-Key": f"traced-{uuid.uuid4()}",
                "traceparent": f"00-{trace_id}-{caller_span}-01",
            },
            json={"participants": [{"number": n} for n in NUMBERS]},
        )
        assert response.status_code == 202, response.text
        conference_id = response.json()["id"]
    events = await records_of(
        lane,
        lane.events_topic,
        conference_id,
        lambda seen: any(v["type"] == "conference.completed" for v in values(seen)),
    )
    final = next(r for r in events if orjson.loads(r.value)["type"] == "conference.completed")
    final_span = headers(final)["traceparent"].split("-")[2]

    async def exported() -> Exported | None:
        return received.one(id=final_span)

    published = await eventually(exported, 30, "the final event's producer span")
    assert published.span.kind == SpanProto.SPAN_KIND_PRODUCER
    assert published.span.name == f"send {lane.events_topic}"
    assert trace_id in published.linked_traces

    server = received.one(trace_id=trace_id, parent=caller_span)
    assert server is not None and server.span.name == "POST /v1/conferences"
    assert server.span.kind == SpanProto.SPAN_KIND_SERVER and server.service == "conference-api"
    assert server.attributes["http.response.status_code"] == "202"
    sent = received.one(trace_id=trace_id, parent=server.id, name=f"send {lane.commands_topic}")
    assert sent is not None and sent.span.kind == SpanProto.SPAN_KIND_PRODUCER
    processed = received.one(trace_id=trace_id, parent=sent.id)
    assert processed is not None and processed.span.kind == SpanProto.SPAN_KIND_CONSUMER
    assert processed.service == "conference-worker"
    queries = [s for s in received.spans if s.trace_id == trace_id and s.parent == processed.id]
    assert {q.attributes["db.system.name"] for q in queries} == {"postgresql"}
    assert any(q.span.name == "INSERT" for q in queries)

    steps = [s for s in received.spans if trace_id in s.linked_traces and "step" in s.span.name]
    assert {s.span.name for s in steps} == {"dialer step", "poller step"}
    provider_calls = {
        s.span.name
        for s in received.spans
        if s.span.kind == SpanProto.SPAN_KIND_CLIENT and s.parent in {st.id for st in steps}
    }
    assert {"POST /conferencia", "POST /conferencia/{id}", "GET /conferencia/{id}"} <= (
        provider_calls
    )
    webhooks = [s for s in received.spans if "webhooks" in s.span.name]
    assert webhooks, "the provider's webhooks were traced too"
    assert {s.attributes.get("http.route") for s in webhooks} == {
        "/v1/webhooks/totalvoice/{secret}"
    }

    ours = [s for s in received.spans if s.service.startswith("conference-")]
    assert {s.schema_url for s in ours} == {SCHEMA_URL}
    secrets = (*NUMBERS, API_TOKEN, SIM_TOKEN, WEBHOOK_SECRET)
    leaked = [
        (s.span.name, text)
        for s in ours
        for text in s.texts()
        if any(secret in text for secret in secrets)
    ]
    leaked += [("resource", t) for t in received.resource_texts if any(x in t for x in secrets)]
    assert not leaked
