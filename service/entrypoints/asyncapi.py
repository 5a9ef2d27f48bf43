"""The AsyncAPI 3.0.0 description of the service's Kafka topics, served at /asyncapi.json and
checked against the specification's own JSON Schema by `make lint` (deploy/lint_asyncapi.py).

Built from what the service really uses rather than written by hand: the topic names are the
defaults of `KafkaSettings`, the payloads are the JSON Schemas of `schemas/` (the api serves the
files as they are at /schemas/{name}), the headers are those of `service.domain.cloudevents`,
the events are `EventType` and the dead-letter reasons the worker's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, get_args

from service.domain import cloudevents as ce
from service.domain.commands import Command
from service.domain.conference import AdditionRefused
from service.domain.events import EventType
from service.settings import KafkaSettings

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
# Exactly the files GET /schemas/{name} serves; any other name is not found.
SCHEMA_FILES = (ce.COMMANDS_SCHEMA, ce.EVENTS_SCHEMA)
SCHEMA_MEDIA_TYPE = "application/schema+json"
KAFKA_BINDING_VERSION = "0.5.0"

# Our schemas are JSON Schema 2020-12; an AsyncAPI Schema Object is a superset of draft-07. They
# are translated into Schema Objects, not wrapped in a Multi Format Schema: AsyncAPI 3.0 names no
# schemaFormat for 2020-12 (only draft-07), and the specification's schema checks nothing inside
# a format it does not know, so a wrapped schema would be validated vacuously. The translation is
# lossless because beyond `$schema`, `$id` and `$defs` the files use draft-07 keywords only
# (type, enum, const, format, pattern, if/then, allOf/anyOf/oneOf, items as one schema...):
# `$defs` move to components/schemas and their `#/$defs/X` refs follow; `$id` goes (inside the
# document it would re-base those refs); `discriminator` goes too: pydantic writes the OpenAPI
# object form where AsyncAPI wants a property name, it is an annotation that validates nothing,
# and each command has its own message here anyway. A keyword draft-07 lacks fails the build
# (so `make lint`), and a `$ref` with siblings, which draft-07 would ignore, becomes an allOf.
_NOT_DRAFT_07 = frozenset(
    {
        "$anchor",
        "$dynamicAnchor",
        "$dynamicRef",
        "$recursiveAnchor",
        "$recursiveRef",
        "$vocabulary",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "contentSchema",
    }
)
_DROPPED = frozenset({"$schema", "$id", "$defs", "discriminator"})
# Keywords whose value maps names to schemas, and those whose value is data, not a schema.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_DATA = frozenset({"enum", "const", "default", "examples", "required", "title", "description"})
_DEFS_REF = "#/$defs/"
_COMPONENT_REF = "#/components/schemas/"

# CloudEvents' REQUIRED attributes; the others are OPTIONAL there, though the service writes
# every one of ce.HEADER_NAMES on every command and event it sends.
_CE_REQUIRED = frozenset({"ce_specversion", "ce_id", "ce_source", "ce_type"})
_TRACE_HEADERS: dict[str, Any] = {
    "traceparent": {
        "type": "string",
        "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        "description": "W3C Trace Context of the producer's span; only when tracing is on.",
    },
    "tracestate": {
        "type": "string",
        "description": "W3C Trace Context vendor state; only when tracing is on and there is any.",
    },
}
# The reasons the worker dead-letters a command with (service/entrypoints/consumer.py), before
# the refusals of an add (`AdditionRefused`), which it dead-letters under their own value.
CONSUMER_REASONS = (
    "not-json",
    "invalid-command",
    "unknown-caller",
    "command-id-reused",
    "refused-by-store",
)
_CONFERENCE_KEY = {
    "type": "string",
    "format": "uuid",
    "description": "The conference id: a conference's messages keep their order on one partition.",
}
# Production: KAFKA_REPLICATION_FACTOR=3, min.insync.replicas 2 (deploy/local/kafka.sh topics).
_REPLICAS = 3


@dataclass(frozen=True)
class _Topic:
    channel: str
    setting: str  # the KafkaSettings field that names it (KAFKA_*_TOPIC)
    partitions: int  # as deploy/local/kafka.sh creates them
    title: str
    description: str
    schema: str | None = None  # the file in schemas/ its values follow
    id_field: str = ""  # the value's fields ce_id and ce_time are taken from
    time_field: str = ""

    @property
    def address(self) -> str:
        return str(KafkaSettings.model_fields[self.setting].default)

    @property
    def component(self) -> str:
        return (self.schema or "").removesuffix(".json")


_COMMANDS = _Topic(
    "commands",
    "kafka_commands_topic",
    3,
    "Conference commands",
    "Requests for conferences and for participants added to them. The api sends every command "
    "it answers 202 for; other services may produce them directly. The worker group accepts "
    "each one once (unique on command_id, and on caller + idempotency_key).",
    ce.COMMANDS_SCHEMA,
    "command_id",
    "requested_at",
)
_EVENTS = _Topic(
    "events",
    "kafka_events_topic",
    3,
    "Conference events",
    "What happened to each conference, from its acceptance to its final billing and any later "
    "reconciliation, published from the worker's outbox (at least once: consumers dedupe on "
    "event_id and order by sequence within a conference). Billing and other services consume it.",
    ce.EVENTS_SCHEMA,
    "event_id",
    "occurred_at",
)
_DEAD_LETTERS = _Topic(
    "deadLetters",
    "kafka_dlq_topic",
    1,
    "Dead-lettered commands",
    "Commands the worker can never accept, so that they hold up no partition: value and key as "
    "they were, the original headers kept, and why in dlq.reason and dlq.detail.",
)
_TOPICS = (_COMMANDS, _EVENTS, _DEAD_LETTERS)

COMMAND_SUMMARIES = {
    "conference.create": "Create a conference and dial its participants (POST /v1/conferences).",
    "participant.add": "Dial one more participant into a running conference "
    "(POST /v1/conferences/{id}/participants).",
}
EVENT_SUMMARIES = {
    EventType.ACCEPTED: "The command is accepted: the conference exists and will be dialed.",
    EventType.DIALED: "The provider's conference is created and its participants dialed.",
    EventType.PARTICIPANT_ADDED: "A participant was added to the running conference.",
    EventType.PARTICIPANT_STATUS_CHANGED: "One participant's call changed (data.participant).",
    EventType.COMPLETED: "Final: the conference ended; data is its billing.",
    EventType.FAILED: "Final: the conference failed; data is its billing (failure_reason).",
    EventType.CANCELED: "Final: the conference was canceled; data is its billing.",
    EventType.UNRESOLVED: "Final: not settled before its deadline; data is the billing known.",
    EventType.RECONCILED: "A correction from a provider report (adjustment or call added).",
}
DEAD_LETTER_MESSAGE = "command.dead_lettered"


def command_types() -> list[str]:
    """`conference.create`, `participant.add`: the `type` of each command model."""
    return [get_args(model.model_fields["type"].annotation)[0] for model in get_args(Command)]


def schema_file(name: str) -> bytes | None:
    """The bytes of one of the topics' JSON Schemas as GET /schemas/{name} serves them; None for
    any name but those of SCHEMA_FILES."""
    return _read(name) if name in SCHEMA_FILES else None


@cache
def _read(name: str) -> bytes:
    return (SCHEMAS_DIR / name).read_bytes()


def _translate(node: Any, where: str) -> Any:
    """A JSON Schema 2020-12 (sub)schema of our files as an AsyncAPI (draft-07) Schema Object."""
    if isinstance(node, list):
        return [_translate(item, where) for item in node]
    if not isinstance(node, dict):
        return node
    unsupported = sorted(node.keys() & _NOT_DRAFT_07)
    if unsupported:
        raise ValueError(f"{where}: {unsupported} have no draft-07 equivalent; translate them")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in _DATA:
            out[key] = value
        elif key in _SCHEMA_MAPS:
            out[key] = {name: _translate(sub, f"{where}/{name}") for name, sub in value.items()}
        else:
            out[key] = _translate(value, f"{where}/{key}")
    ref = out.pop("$ref", None)
    if ref is None:
        return out
    if not isinstance(ref, str) or not ref.startswith(_DEFS_REF):
        raise ValueError(f"{where}: only refs to the file's own $defs are supported, not {ref!r}")
    target = {"$ref": _COMPONENT_REF + ref.removeprefix(_DEFS_REF)}
    return {**out, "allOf": [target, *out.get("allOf", [])]} if out else target


def _component_schemas() -> dict[str, Any]:
    """Each topic's schema under its file's name (conference.events.v1), its $defs beside it."""
    components: dict[str, Any] = {}
    for topic in _TOPICS:
        if topic.schema is None:
            continue
        schema = json.loads(_read(topic.schema))
        found = {topic.component: schema, **schema.get("$defs", {})}
        clash = sorted(found.keys() & components.keys())
        if clash:
            raise ValueError(f"{topic.schema}: {clash} already named by another schema")
        for name, sub in found.items():
            components[name] = _translate(sub, f"{topic.schema}#{name}")
    return components


def _string(description: str, **keywords: Any) -> dict[str, Any]:
    return {"type": "string", **keywords, "description": description}


def _cloudevent_headers(topic: _Topic, kind: str) -> dict[str, Any]:
    """The headers of one type of message: the CloudEvents attributes in Kafka's binary mode."""
    assert topic.schema is not None
    described = {
        "ce_specversion": _string("The CloudEvents version.", const=ce.SPEC_VERSION),
        "ce_id": _string(
            f"The value's {topic.id_field}: ce_source + ce_id is unique per message.",
            format="uuid",
        ),
        "ce_source": _string("The producer: the same for every process.", const=ce.SOURCE),
        "ce_type": _string(
            "The value's type and the major version.", const=ce.cloudevent_type(kind)
        ),
        "ce_time": _string(f"The value's {topic.time_field}.", format="date-time"),
        "ce_subject": _string("The conference id: the value's conference_id.", format="uuid"),
        "ce_dataschema": _string(
            "The value's JSON Schema, also served at /schemas/{name}.",
            const=ce.SCHEMA_BASE_URL + topic.schema,
            format="uri",
        ),
        "content-type": _string("CloudEvents' datacontenttype.", const=ce.CONTENT_TYPE),
    }
    # Indexed by HEADER_NAMES: a header added there and not described here fails the build.
    properties = {name: described[name] for name in ce.HEADER_NAMES}
    return {
        "type": "object",
        "required": [name for name in ce.HEADER_NAMES if name in _CE_REQUIRED],
        "properties": {**properties, **_TRACE_HEADERS},
    }


def _message(topic: _Topic, kind: str, summary: str) -> dict[str, Any]:
    """One type of command or event: the topic's schema with `type` narrowed to `kind`."""
    return {
        "name": kind,
        "title": kind,
        "summary": summary,
        "contentType": ce.CONTENT_TYPE,
        "headers": _cloudevent_headers(topic, kind),
        "payload": {
            "allOf": [
                {"$ref": _COMPONENT_REF + topic.component},
                {"properties": {"type": {"const": kind}}},
            ]
        },
        "bindings": {"kafka": {"key": _CONFERENCE_KEY, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _dead_letter() -> dict[str, Any]:
    """A command as it arrived, with why the worker can never accept it."""
    kept = {
        name: _string("Kept from the original message, when it had this header.")
        for name in (*ce.HEADER_NAMES, *_TRACE_HEADERS)
    }
    reasons = [*CONSUMER_REASONS, *(refused.value for refused in AdditionRefused)]
    added = {
        "dlq.reason": _string("Why the command can never be accepted.", enum=reasons),
        "dlq.detail": _string("What was wrong, for a person.", maxLength=1000),
        "dlq.source": _string(
            "Where the original was: topic/partition/offset.", pattern="^.+/[0-9]+/[0-9]+$"
        ),
    }
    return {
        "name": DEAD_LETTER_MESSAGE,
        "title": "Dead-lettered command",
        "summary": "A command the worker can never accept, copied as it was.",
        "contentType": "application/octet-stream",
        "headers": {"type": "object", "required": list(added), "properties": {**kept, **added}},
        "payload": {
            "description": "The original value byte for byte: normally a value of "
            f"{_COMMANDS.address} ({ce.COMMANDS_SCHEMA}) that is refused, but with dlq.reason "
            "not-json anything at all.",
        },
        "bindings": {
            "kafka": {
                "key": _string("The original key as it was (normally the conference id)."),
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _messages() -> dict[str, dict[str, Any]]:
    """The messages of each channel, by channel id and then by name."""
    return {
        _COMMANDS.channel: {
            kind: _message(_COMMANDS, kind, COMMAND_SUMMARIES[kind]) for kind in command_types()
        },
        _EVENTS.channel: {
            kind.value: _message(_EVENTS, kind.value, EVENT_SUMMARIES[kind]) for kind in EventType
        },
        _DEAD_LETTERS.channel: {DEAD_LETTER_MESSAGE: _dead_letter()},
    }


def _channel(topic: _Topic, names: list[str]) -> dict[str, Any]:
    return {
        "address": topic.address,
        "title": topic.title,
        "description": f"{topic.description} Its name is {topic.setting.upper()}'s default.",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        "bindings": {
            "kafka": {
                "topic": topic.address,
                "partitions": topic.partitions,
                "replicas": _REPLICAS,
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


# The service's own actions: (id, action, channel, process, summary).
_OPERATIONS = (
    ("sendCommands", "send", _COMMANDS, "api", "The api sends each command it accepts."),
    (
        "receiveCommands",
        "receive",
        _COMMANDS,
        "worker",
        "The worker group accepts each command once; what it can never accept it dead-letters.",
    ),
    ("sendEvents", "send", _EVENTS, "worker", "The worker's outbox relay publishes the events."),
    ("sendDeadLetters", "send", _DEAD_LETTERS, "worker", "The worker dead-letters a command."),
)


def _operations(messages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    group = str(KafkaSettings.model_fields["kafka_consumer_group"].default)
    operations: dict[str, Any] = {}
    for operation_id, action, topic, process, summary in _OPERATIONS:
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{topic.channel}"},
            "summary": summary,
            "tags": [{"name": process}],
            "messages": [
                {"$ref": f"#/channels/{topic.channel}/messages/{name}"}
                for name in messages[topic.channel]
            ],
        }
        if action == "receive":
            operation["bindings"] = {
                "kafka": {
                    "groupId": _string("KAFKA_CONSUMER_GROUP's default.", enum=[group]),
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            }
        operations[operation_id] = operation
    return operations


def _version() -> str:
    try:
        return metadata.version("conference-service")
    except metadata.PackageNotFoundError:
        return "1.0.0"


_DESCRIPTION = (
    "The Kafka topics of the conference service. Commands and events are JSON values keyed by "
    "the conference id and carry CloudEvents 1.0 attributes in Kafka's binary mode (`ce_*` "
    "headers; the value stays the plain JSON document), and W3C `traceparent` when tracing is "
    "on. Topic names are the defaults of the KAFKA_*_TOPIC settings. The values' JSON Schemas "
    "(2020-12) are served as they are at /schemas/{name}; here they are draft-07 Schema Objects."
)


@cache
def asyncapi_document() -> dict[str, Any]:
    """The document (made once; do not mutate it)."""
    messages = _messages()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Conference service topics",
            "version": _version(),
            "description": _DESCRIPTION,
        },
        "defaultContentType": ce.CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The deployment's brokers: plaintext on the local stack, "
                "SASL_SSL in production (KAFKA_SECURITY_PROTOCOL).",
                "variables": {
                    "bootstrap": {
                        "description": "KAFKA_BOOTSTRAP_SERVERS (host:port).",
                        "examples": ["127.0.0.1:19092"],
                    }
                },
            }
        },
        "channels": {
            topic.channel: _channel(topic, list(messages[topic.channel])) for topic in _TOPICS
        },
        "operations": _operations(messages),
        "components": {
            "schemas": _component_schemas(),
            "messages": {name: m for by_name in messages.values() for name, m in by_name.items()},
        },
    }
