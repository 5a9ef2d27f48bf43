"""CloudEvents 1.0 attributes for the messages on our topics, in Kafka's binary mode: the
attributes travel as `ce_*` headers and the value stays the JSON document it always was, so a
consumer that ignores headers sees no change.

One function per topic builds the headers from the value itself; the AsyncAPI document
(service/entrypoints/asyncapi.py) describes the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SPEC_VERSION = "1.0"
# Where our messages come from (a URI-reference, as CloudEvents asks), the same for every
# process of the service: `ce_source` + `ce_id` is unique per message.
SOURCE = "/conference-service"
CONTENT_TYPE = "application/json"
# The JSON Schemas of `schemas/`, which the api also serves at /schemas/{name}. The host is the
# one the problem types use: a name for the service, resolved wherever it is deployed.
SCHEMA_BASE_URL = "https://conference-service/schemas/"
EVENTS_SCHEMA = "conference.events.v1.json"
COMMANDS_SCHEMA = "conference.commands.v1.json"
# The major version every type carries; it changes with the topic's name.
MAJOR_VERSION = "v1"

Headers = list[tuple[str, bytes]]

# Every header a message on the events or the commands topic carries, in the order written.
HEADER_NAMES = (
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "ce_dataschema",
    "content-type",
)


def cloudevent_type(kind: str) -> str:
    """`conference.completed` -> `conference.completed.v1`."""
    return f"{kind}.{MAJOR_VERSION}"


def _headers(id_: str, kind: str, time: str, subject: str, schema: str) -> Headers:
    values = (
        SPEC_VERSION,
        id_,
        SOURCE,
        cloudevent_type(kind),
        time,
        subject,
        SCHEMA_BASE_URL + schema,
        CONTENT_TYPE,
    )
    return [(name, value.encode()) for name, value in zip(HEADER_NAMES, values, strict=True)]


def event_headers(event: Mapping[str, Any]) -> Headers:
    """The headers of one event, from its value on `conference.events.v1`."""
    return _headers(
        str(event["event_id"]),
        str(event["type"]),
        str(event["occurred_at"]),
        str(event["conference_id"]),
        EVENTS_SCHEMA,
    )


def command_headers(command: Mapping[str, Any]) -> Headers:
    """The headers of one command, from its value on `conference.commands.v1`."""
    return _headers(
        str(command["command_id"]),
        str(command["type"]),
        str(command["requested_at"]),
        str(command["conference_id"]),
        COMMANDS_SCHEMA,
    )
