"""The AsyncAPI document of the Kafka topics: valid AsyncAPI 3.0.0 by the specification's own
schema (and a broken copy is not), complete (every event and command type, the CloudEvents
headers the code writes, the worker's dead-letter reasons), and true: the envelopes and headers
the real handlers and adapters' helpers produce validate against their message, and against no
other message of the channel. The api serves it and the topics' JSON Schema files."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT7

from deploy.lint_asyncapi import canary, dangling_refs, problems, spec_validator
from service.domain import cloudevents
from service.domain.commands import AddParticipantCommand, ParticipantRequest
from service.domain.conference import AdditionRefused
from service.domain.events import EventType, envelope
from service.entrypoints.asyncapi import (
    CONSUMER_REASONS,
    DEAD_LETTER_MESSAGE,
    SCHEMA_FILES,
    SCHEMAS_DIR,
    asyncapi_document,
    command_types,
)
from service.entrypoints.openapi import OPENAPI
from service.handlers import (
    ReconcileDeps,
    WorkerDeps,
    accept_command,
    accept_participant_command,
    reconcile_period,
)
from service.ports import ProviderRejected
from tests.fakes import (
    FakeBudget,
    FakeCall,
    FakeClock,
    FakeCommandPublisher,
    FakeConferenceStore,
    FakeProvider,
)
from tests.unit.test_add_participant import MAX_DURATION, add
from tests.unit.test_command_consumer import consume, wire
from tests.unit.test_dial_protocol import TIMING, command, step
from tests.unit.test_http_api import api_client, build_app
from tests.unit.test_reconcile import PERIOD

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = "urn:asyncapi"
TRACE_HEADERS = {"traceparent", "tracestate"}

# jsonschema checks date-time only with an optional package: our own check, as strict.
FORMATS = jsonschema.FormatChecker()
FORMATS.checks("date-time", raises=ValueError)(
    lambda value: not isinstance(value, str) or bool(datetime.fromisoformat(value))
)


def document() -> dict[str, Any]:
    return copy.deepcopy(asyncapi_document())


def validator(pointer: str) -> jsonschema.Draft7Validator:
    """Validates against the Schema Object at `pointer` in the document, $refs resolved there."""
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT, DRAFT7.create_resource(asyncapi_document())
    )
    return jsonschema.Draft7Validator(
        {"$ref": f"{DOCUMENT}#{pointer}"}, registry=registry, format_checker=FORMATS
    )


def accepting(channel: str, part: str, instance: object) -> list[str]:
    """The messages of `channel` whose `part` (payload, headers) accepts `instance`."""
    names = asyncapi_document()["channels"][channel]["messages"]
    return [
        name
        for name in names
        if validator(f"/components/messages/{name}/{part}").is_valid(instance)
    ]


def test_the_document_is_valid_asyncapi_3() -> None:
    assert asyncapi_document()["asyncapi"] == "3.0.0"
    assert problems(asyncapi_document()) == []
    assert dangling_refs(asyncapi_document()) == []


BREAKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "a channel that is a string": lambda d: d.update(canary(d)),
    "an AsyncAPI 2 action": lambda d: d["operations"]["sendEvents"].update(action="publish"),
    "no info version": lambda d: d["info"].pop("version"),
    "a payload of an unknown type": lambda d: d["components"]["schemas"]["participant"][
        "properties"
    ]["number"].update(type="strng"),
    "OpenAPI's discriminator kept": lambda d: d["components"]["schemas"][
        "conference.commands.v1"
    ].update(discriminator={"propertyName": "type"}),
    "a topic of no partitions": lambda d: d["channels"]["events"]["bindings"]["kafka"].update(
        partitions=0
    ),
    "a group id that is not a schema": lambda d: d["operations"]["receiveCommands"]["bindings"][
        "kafka"
    ].update(groupId=7),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_broken_copy_is_refused(name: str) -> None:
    broken = document()
    BREAKS[name](broken)
    assert problems(broken, spec_validator())


def test_a_ref_to_nothing_is_reported() -> None:
    broken = document()
    broken["components"]["schemas"].pop("money")
    assert [line.split(":")[0] for line in dangling_refs(broken)] == [
        "#/components/schemas/participant/properties/price",
        "#/components/schemas/billing_snapshot/properties/totals/properties/price",
    ]


def test_every_event_and_command_type_is_a_message_named_by_it() -> None:
    channels = asyncapi_document()["channels"]
    events = {kind.value for kind in EventType}
    assert set(channels["events"]["messages"]) == events
    assert set(channels["commands"]["messages"]) == {"conference.create", "participant.add"}
    assert set(command_types()) == {"conference.create", "participant.add"}
    assert set(channels["deadLetters"]["messages"]) == {DEAD_LETTER_MESSAGE}
    for name, message in asyncapi_document()["components"]["messages"].items():
        assert message["name"] == name
    # The topic's own schema says the same.
    events_schema = json.loads((ROOT / "schemas" / cloudevents.EVENTS_SCHEMA).read_text())
    assert set(events_schema["properties"]["type"]["enum"]) == events


def test_the_channels_are_the_topics() -> None:
    channels = asyncapi_document()["channels"]
    addresses = {channel: c["address"] for channel, c in channels.items()}
    assert addresses == {
        "commands": "conference.commands.v1",
        "events": "conference.events.v1",
        "deadLetters": "conference.commands.dlq.v1",
    }
    kafka_sh = (ROOT / "deploy" / "local" / "kafka.sh").read_text()
    assert '"KAFKA_PARTITIONS", "3"' in kafka_sh
    assert "wanted = {commands: parts, events: parts, dlq: 1}" in kafka_sh
    partitions = {c: channels[c]["bindings"]["kafka"]["partitions"] for c in channels}
    assert partitions == {"commands": 3, "events": 3, "deadLetters": 1}
    for channel in channels.values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]


def test_the_cloudevents_headers_are_the_ones_the_code_writes() -> None:
    messages = asyncapi_document()["components"]["messages"]
    for name in [*command_types(), *(kind.value for kind in EventType), DEAD_LETTER_MESSAGE]:
        properties = messages[name]["headers"]["properties"]
        cloudevent = [h for h in properties if h.startswith("ce_") or h == "content-type"]
        assert tuple(cloudevent) == cloudevents.HEADER_NAMES, name
        assert set(properties) >= TRACE_HEADERS, name
        assert not TRACE_HEADERS & set(messages[name]["headers"]["required"]), name


def test_the_dead_letter_reasons_are_the_workers() -> None:
    consumer = (ROOT / "service" / "entrypoints" / "consumer.py").read_text()
    literal = set(re.findall(r'_dead_letter\(\s*record,\s*"([a-z-]+)"', consumer))
    assert literal == set(CONSUMER_REASONS)
    assert "_dead_letter(record, refused.reason.value" in consumer
    headers = asyncapi_document()["components"]["messages"][DEAD_LETTER_MESSAGE]["headers"]
    assert headers["required"] == ["dlq.reason", "dlq.detail", "dlq.source"]
    reasons = headers["properties"]["dlq.reason"]["enum"]
    assert reasons == [*CONSUMER_REASONS, *(r.value for r in AdditionRefused)]


def _headers(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    return {name: value.decode() for name, value in headers}


def _world() -> tuple[WorkerDeps, FakeConferenceStore, FakeProvider, FakeClock]:
    clock = FakeClock()
    store, provider = FakeConferenceStore(clock), FakeProvider()
    deps = WorkerDeps(store, provider, FakeBudget(clock), TIMING, clock, lambda: 0.5)
    return deps, store, provider, clock


async def _lifecycle() -> FakeConferenceStore:
    """Accepted, dialed, one added, completed, then reconciled: a changed price, a call added."""
    deps, store, provider, clock = _world()
    created = command("4832830151", "+5548999990000")
    await accept_command(store, created, clock())
    await step(deps, store)
    added = add(created.conference_id, "+5511988887777")
    await accept_participant_command(store, added, clock(), MAX_DURATION)
    for _ in range(3):
        clock.advance(3)
        await step(deps, store)
    provider.finish_all(talk=42, price="0.1200")
    clock.advance(10)
    await step(deps, store)
    provider.conferences["1000"][0].price = "0.3400"
    provider.conferences["1000"].append(
        FakeCall("9001", "+554835000001", "atendida", 60, 50, 55, "0.1200")
    )
    await reconcile_period(ReconcileDeps(store, provider, clock), *PERIOD)
    return store


async def _failed() -> FakeConferenceStore:
    deps, store, provider, clock = _world()
    await accept_command(store, command("4832830151"), clock())
    provider.place_call_before_failing = False
    provider.fail_next_dial_with = ProviderRejected("saldo insuficiente", status=402, reason=9)
    await step(deps, store)
    return store


async def _canceled() -> FakeConferenceStore:
    deps, store, _, clock = _world()
    created = command("4832830151")
    await accept_command(store, created, clock())
    await store.request_cancel(created.caller, created.conference_id)
    await step(deps, store)
    return store


async def _unresolved() -> FakeConferenceStore:
    deps, store, provider, clock = _world()
    await accept_command(store, command("4832830151"), clock())
    await step(deps, store)
    provider.conferences["1000"][0].status = "atendida"  # answered, never billed
    clock.advance(TIMING.settle_deadline + 1)
    await step(deps, store)
    return store


async def real_envelopes() -> list[dict[str, Any]]:
    """Every event the handlers wrote in four conferences, as the relay sends its value."""
    values = []
    for scenario in (_lifecycle, _failed, _canceled, _unresolved):
        store = await scenario()
        for row in store.rows.values():
            for sequence, event in row.events:
                value = envelope(row.conference, event, sequence)
                values.append(orjson.loads(orjson.dumps(value)))
    return values


async def test_each_real_event_matches_its_message_and_no_other() -> None:
    values = await real_envelopes()
    assert {value["type"] for value in values} == {kind.value for kind in EventType}
    assert {value["data"]["kind"] for value in values if "kind" in value["data"]} == {
        "adjustment",
        "call_added",
    }
    for value in values:
        assert accepting("events", "payload", value) == [value["type"]], value["type"]
        headers = _headers(cloudevents.event_headers(value))
        assert accepting("events", "headers", headers) == [value["type"]], value["type"]
    # Narrowed, not loosened: a float price is refused as the topic's schema refuses it.
    completed = next(v for v in values if v["type"] == "conference.completed")
    completed["data"]["totals"]["price"] = 0.36
    assert accepting("events", "payload", completed) == []


def test_each_real_command_matches_its_message_and_no_other() -> None:
    create = command("4832830151")
    addition = AddParticipantCommand(
        type="participant.add",
        command_id=uuid.uuid4(),
        conference_id=create.conference_id,
        caller="billing",
        idempotency_key="add-1",
        requested_at=datetime.now(UTC),
        payload=ParticipantRequest.model_validate({"number": "4832830151"}),
    )
    traced = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    for sent in (create, addition):
        assert accepting("commands", "payload", sent.wire) == [sent.type]
        headers = _headers(cloudevents.command_headers(sent.wire) + traced)
        assert accepting("commands", "headers", headers) == [sent.type]
    assert accepting("commands", "payload", {**create.wire, "payload": {}}) == []
    assert accepting("commands", "headers", {"ce_type": "conference.create.v1"}) == []
    late = {**_headers(cloudevents.command_headers(create.wire)), "ce_time": "yesterday"}
    assert accepting("commands", "headers", late) == []


async def test_real_dead_letters_match_the_dead_letter_message() -> None:
    unknown = {**wire("x"), "caller": "nobody"}
    dead_letters = await consume(
        [b"{not json", orjson.dumps(unknown)], FakeConferenceStore(FakeClock())
    )
    assert len(dead_letters.sent) == 2
    for _, headers in dead_letters.sent:
        decoded = {name: value.decode() for name, value in headers.items()}
        assert accepting("deadLetters", "headers", decoded) == [DEAD_LETTER_MESSAGE]
    assert accepting("deadLetters", "headers", {"dlq.reason": "not-json"}) == []


async def test_the_api_serves_the_document_and_the_schemas_without_a_token() -> None:
    app = build_app(FakeConferenceStore(FakeClock()), FakeCommandPublisher())
    async with api_client(app) as client:
        served = await client.get("/asyncapi.json")
        assert served.status_code == 200
        assert served.headers["content-type"] == "application/json"
        assert served.json() == asyncapi_document()
        for name in SCHEMA_FILES:
            schema = await client.get(f"/schemas/{name}")
            assert schema.status_code == 200
            assert schema.headers["content-type"] == "application/schema+json"
            assert schema.content == (SCHEMAS_DIR / name).read_bytes()
        for name in ("nope.json", "3.0.0.json", "..", "conference.events.v1"):
            missing = await client.get(f"/schemas/{name}")
            assert missing.status_code == 404, name
            assert missing.headers["content-type"] == "application/problem+json"
            assert missing.json()["type"] == "https://conference-service/problems/not-found"
    declared = OPENAPI["paths"]["/schemas/{name}"]["get"]
    assert set(declared["parameters"][0]["schema"]["enum"]) == set(SCHEMA_FILES)
    assert list(declared["responses"]["200"]["content"]) == ["application/schema+json"]
    assert list(declared["responses"]["404"]["content"]) == ["application/problem+json"]
