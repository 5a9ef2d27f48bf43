"""The OpenAPI 3.1 description served at /openapi.json, written by hand to match CONTRACT.md and
what http.py answers; tests fuzz the running api against it (tests/e2e/test_openapi_fuzz.py)."""

from __future__ import annotations

from typing import Any

from service.domain.cloudevents import COMMANDS_SCHEMA, EVENTS_SCHEMA

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _problem(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }
    if retry_after:
        response["headers"] = _RETRY_AFTER
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_UNAUTHORIZED = _problem("Missing, malformed or unknown bearer token (the same answer for all).")
_RATE_LIMITED = _problem(
    "The caller is over its request rate (or, on create, its participants a minute).",
    retry_after=True,
)
_UNAVAILABLE = _problem("A dependency (Postgres, Kafka) is down; retry later.", retry_after=True)
_NOT_FOUND = _problem("No such conference for this caller (another caller's id is not found).")

_NUMBER = {
    "type": "string",
    "description": "Brazilian DDD + number (10-11 digits) or E.164 +55...; echoed in E.164.",
    "pattern": r"^(\+55)?[1-9][1-9][0-9]{8,9}$",
    "examples": ["4832830151", "+5548999990000"],
}
_NULLABLE_STRING = {"type": ["string", "null"]}
# Postgres text holds no NUL character: the API refuses one anywhere in a body (422).
_TEXT = {"type": "string", "pattern": "^[^\\x00]*$"}
_METADATA = {
    "type": "object",
    "description": "String values, at most 4 KiB as JSON; echoed in every event.",
    "propertyNames": _TEXT,
    "additionalProperties": _TEXT,
}
_NULLABLE_MOMENT = {"type": ["string", "null"], "format": "date-time"}
_NULLABLE_COUNT = {"type": ["integer", "null"], "minimum": 0}
_PRICE = {
    "type": "string",
    "pattern": r"^-?[0-9]+\.[0-9]{4,6}$",
    "description": "BRL, exact as stored: 4 to 6 decimal places.",
}
_STATUSES = ["accepted", "dialing", "in_progress", "completed", "failed", "canceled", "unresolved"]
_CONFERENCE_ID = {
    "name": "conference_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "maxItems": 50,
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {
                        "field": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
    "Participant": {
        "type": "object",
        "additionalProperties": False,
        "required": ["number"],
        "properties": {
            "number": _NUMBER,
            "caller_id": {**_NUMBER, "description": "Shown to the callee (bina)."},
            "record": {"type": "boolean"},
        },
    },
    "CreateConference": {
        "type": "object",
        "additionalProperties": False,
        "required": ["participants"],
        "properties": {
            "participants": {
                "type": "array",
                "minItems": 1,
                "maxItems": 10,
                "description": "Distinct numbers.",
                "items": _ref("Participant"),
            },
            "caller_id": _NUMBER,
            "record": {"type": "boolean"},
            "reference": {**_TEXT, "maxLength": 200},
            "metadata": _METADATA,
            "max_duration_seconds": {"type": "integer", "minimum": 60, "maximum": 86400},
        },
    },
    "CreateConferenceSeedForm": {
        "type": "object",
        "description": "The provider's documented create body: one participant. The audio-only "
        "fields are accepted and ignored.",
        "additionalProperties": False,
        "required": ["numero_destino"],
        "properties": {
            "numero_destino": _NUMBER,
            "bina": _NUMBER,
            "gravar_conferencia": {"type": "boolean"},
            "url_conferencia": _TEXT,
            "resposta_usuario": {"type": "boolean"},
            "reference": {**_TEXT, "maxLength": 200},
            "metadata": _METADATA,
            "max_duration_seconds": {"type": "integer", "minimum": 60, "maximum": 86400},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["id", "status", "idempotency_key", "created_at", "links"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"const": "accepted"},
            "idempotency_key": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "links": {
                "type": "object",
                "required": ["self"],
                "properties": {"self": {"type": "string"}},
            },
        },
    },
    "ParticipantAdded": {
        "type": "object",
        "required": [
            "conference_id",
            "position",
            "number",
            "dial_state",
            "idempotency_key",
            "links",
        ],
        "properties": {
            "conference_id": {"type": "string", "format": "uuid"},
            "position": {"type": "integer", "minimum": 0, "maximum": 9},
            "number": {"type": "string", "description": "E.164."},
            "dial_state": {"const": "pending"},
            "idempotency_key": {"type": "string"},
            "links": {
                "type": "object",
                "required": ["conference"],
                "properties": {"conference": {"type": "string"}},
            },
        },
    },
    "ParticipantView": {
        "type": "object",
        "required": ["position", "number", "dial_state"],
        "properties": {
            "position": {"type": "integer", "minimum": 0},
            "number": {"type": "string"},
            "dial_state": {"enum": ["pending", "dialing", "dialed", "rejected"]},
            "provider_call_id": _NULLABLE_STRING,
            "status": {**_NULLABLE_STRING, "description": "The provider's raw call status."},
            "started_at": _NULLABLE_MOMENT,
            "settled_at": _NULLABLE_MOMENT,
            "duration_seconds": _NULLABLE_COUNT,
            "billed_seconds": _NULLABLE_COUNT,
            "talk_seconds": _NULLABLE_COUNT,
            "price": {**_PRICE, "type": ["string", "null"]},
            "currency": _NULLABLE_STRING,
            "recording_url": _NULLABLE_STRING,
            "rejection_reason": {
                **_NULLABLE_STRING,
                "description": "Why a rejected participant was not dialed, or was refused.",
            },
        },
    },
    "Conference": {
        "type": "object",
        "required": [
            "id",
            "status",
            "idempotency_key",
            "reference",
            "metadata",
            "created_at",
            "provider_conference_id",
            "finalized_at",
            "failure_reason",
            "participants",
            "totals",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": _STATUSES},
            "idempotency_key": {"type": "string"},
            "reference": _NULLABLE_STRING,
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"},
            "provider_conference_id": _NULLABLE_STRING,
            "finalized_at": _NULLABLE_MOMENT,
            "failure_reason": _NULLABLE_STRING,
            "participants": {"type": "array", "items": _ref("ParticipantView")},
            "totals": {
                "type": "object",
                "required": ["billed_seconds", "price", "currency"],
                "properties": {
                    "billed_seconds": {"type": "integer", "minimum": 0},
                    "price": _PRICE,
                    "currency": {"type": "string"},
                },
            },
        },
    },
    "ConferencePage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("Conference")},
            "next_cursor": {
                **_NULLABLE_STRING,
                "description": "Pass as `cursor` for the next page; null on the last.",
            },
        },
    },
    "CancelRequested": {
        "type": "object",
        "required": ["id", "status", "cancel_requested"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": _STATUSES, "description": "The status when the wish was noted."},
            "cancel_requested": {"const": True},
        },
    },
    "ProviderCallback": {
        "type": "object",
        "description": "Any callback the provider documents (chamada_fim, status_tempo_real, "
        "conference events). Ids that are not a number or a string of digits are ignored.",
        "additionalProperties": True,
        "properties": {
            "conferencia_id": {"type": ["integer", "string"]},
            "chamada_id": {"type": ["integer", "string"]},
            "id": {"type": ["integer", "string"]},
            "evento_conferencia": _TEXT,
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ready", "unavailable", "draining"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}

_CONFERENCE_PATHS: dict[str, Any] = {
    "/v1/conferences": {
        "post": {
            "operationId": "createConference",
            "summary": "Create a conference and dial its participants",
            "description": "Answers 202 once the command is durable. The same key and body "
            "again replay the first answer (Idempotent-Replayed: true) and dial nobody.",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^[\x20-\x7e]{1,255}$"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                _ref("CreateConference"),
                                _ref("CreateConferenceSeedForm"),
                            ]
                        }
                    }
                },
            },
            "responses": {
                "202": {
                    **_json("Accepted: the command is durable.", _ref("Accepted")),
                    "headers": {
                        "Location": {"required": True, "schema": {"type": "string"}},
                        "Idempotent-Replayed": {"schema": {"const": "true"}},
                    },
                },
                "400": _problem("Malformed JSON, or a missing or malformed Idempotency-Key."),
                "401": _UNAUTHORIZED,
                "408": _problem("The body did not arrive within API_BODY_TIMEOUT_SECONDS."),
                "413": _problem("Body over 64 KiB."),
                "415": _problem("Not application/json."),
                "422": _problem(
                    "Invalid fields (see errors), or the key reused with another body."
                ),
                "429": _RATE_LIMITED,
                "503": _problem("A dependency is down; retry with the same key.", retry_after=True),
            },
        },
        "get": {
            "operationId": "listConferences",
            "summary": "The caller's conferences, newest first",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"enum": _STATUSES}},
                {
                    "name": "reference",
                    "in": "query",
                    "schema": {"type": "string", "maxLength": 200},
                },
                {
                    "name": "created_from",
                    "in": "query",
                    "description": "Inclusive; without an offset, UTC.",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {
                    "name": "created_to",
                    "in": "query",
                    "description": "Exclusive; without an offset, UTC.",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "A next_cursor this API gave.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
                },
            ],
            "responses": {
                "200": _json("A page of conferences.", _ref("ConferencePage")),
                "401": _UNAUTHORIZED,
                "422": _problem("An unknown or invalid query parameter (see errors)."),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        },
    },
    "/v1/conferences/{conference_id}": {
        "get": {
            "operationId": "getConference",
            "summary": "The conference as the service knows it",
            "parameters": [_CONFERENCE_ID],
            "responses": {
                "200": _json("The conference.", _ref("Conference")),
                "401": _UNAUTHORIZED,
                "404": _NOT_FOUND,
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        },
        "delete": {
            "operationId": "cancelConference",
            "summary": "End the conference at the provider (idempotent)",
            "parameters": [_CONFERENCE_ID],
            "responses": {
                "202": _json(
                    "The wish is noted; the worker ends the conference.", _ref("CancelRequested")
                ),
                "401": _UNAUTHORIZED,
                "404": _NOT_FOUND,
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        },
    },
}

_CONFERENCE_PATHS["/v1/conferences/{conference_id}/participants"] = {
    "post": {
        "operationId": "addParticipant",
        "summary": "Dial one more participant into a running conference",
        "description": "Answers 202 once the request is durable, with the position reserved "
        "for the number; the participant then shows in the conference as pending, dialing, "
        "dialed or rejected (a late refusal by the provider, with its reason). The same key "
        "and body again replay the first answer and dial nobody. Keys are the caller's, "
        "apart from the keys of creates.",
        "parameters": [
            _CONFERENCE_ID,
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[\x20-\x7e]{1,255}$"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("Participant")}},
        },
        "responses": {
            "202": {
                **_json("Accepted: the add is durable.", _ref("ParticipantAdded")),
                "headers": {
                    "Location": {"required": True, "schema": {"type": "string"}},
                    "Idempotent-Replayed": {"schema": {"const": "true"}},
                },
            },
            "400": _problem("Malformed JSON, or a missing or malformed Idempotency-Key."),
            "401": _UNAUTHORIZED,
            "404": _NOT_FOUND,
            "408": _problem("The body did not arrive within API_BODY_TIMEOUT_SECONDS."),
            "409": _problem(
                "The conference takes no one now: final, being canceled, past its maximum "
                "duration, its provider room ended, or still being accepted (retry shortly)."
            ),
            "413": _problem("Body over 64 KiB."),
            "415": _problem("Not application/json."),
            "422": _problem(
                "Invalid fields (see errors), the number already in the conference, 10 "
                "participants already, or the key reused with another body."
            ),
            "429": _RATE_LIMITED,
            "503": _problem("A dependency is down; retry with the same key.", retry_after=True),
        },
    },
}

_OTHER_PATHS: dict[str, Any] = {
    "/v1/webhooks/totalvoice/{secret}": {
        "post": {
            "operationId": "providerCallback",
            "summary": "TotalVoice callbacks: a hint that makes the poller look now",
            "description": "The URL carries WEBHOOK_SECRET (the provider signs nothing). "
            "Bodies up to 16 KiB; any content type, parsed as JSON.",
            "security": [],
            "parameters": [
                {"name": "secret", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ProviderCallback")}},
            },
            "responses": {
                "204": {"description": "Noted."},
                "400": _problem("Not JSON."),
                "404": _problem("Wrong secret: the same answer as any unknown path."),
                "408": _problem("The body did not arrive within WEBHOOK_BODY_TIMEOUT_SECONDS."),
                "413": _problem("Body over 16 KiB."),
                "422": _problem("Not a JSON object, or holds what cannot be stored."),
                "503": _problem(
                    "Too many callbacks at once, or the database is down; retry.",
                    retry_after=True,
                ),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "The process lives",
            "security": [],
            "responses": {"200": _json("Alive.", _ref("Health"))},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readiness",
            "summary": "Postgres and Kafka answer",
            "security": [],
            "responses": {
                "200": _json("Ready.", _ref("Readiness")),
                "503": _json("Not ready, or draining.", _ref("Readiness")),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
        }
    },
    "/asyncapi.json": {
        "get": {
            "operationId": "asyncapi",
            "summary": "The AsyncAPI 3.0 description of the Kafka topics",
            "security": [],
            "responses": {"200": _json("AsyncAPI 3.0.0.", {"type": "object"})},
        }
    },
    "/schemas/{name}": {
        "get": {
            "operationId": "topicSchema",
            "summary": "The JSON Schema of a topic's values, the file as it is",
            "description": "The schemas the CloudEvents header ce_dataschema names.",
            "security": [],
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": [COMMANDS_SCHEMA, EVENTS_SCHEMA]},
                }
            ],
            "responses": {
                "200": {
                    "description": "JSON Schema 2020-12.",
                    "content": {"application/schema+json": {"schema": {"type": "object"}}},
                },
                "404": _problem("Any other name: the same answer as any unknown path."),
            },
        }
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Conference service",
        "version": "1.0.0",
        "description": "Conference calls through TotalVoice, billed exactly. Every /v1 route but "
        "the webhook needs a bearer token; each caller sees only its own conferences. Callers "
        "are limited in requests a second and participants a minute (429 with Retry-After).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
    },
    "security": [{"bearer": []}],
    "paths": {**_CONFERENCE_PATHS, **_OTHER_PATHS},
}
