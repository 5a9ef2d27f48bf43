"""The OpenAPI 3.1 description served at /openapi.json, written by hand to match CONTRACT.md."""

from __future__ import annotations

from typing import Any

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }


_NUMBER = {
    "type": "string",
    "description": "Brazilian DDD + number (10-11 digits) or E.164 +55...; echoed in E.164.",
    "examples": ["4832830151", "+5548999990000"],
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Conference service",
        "version": "1.0.0",
        "description": "Conference calls through TotalVoice, billed exactly.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "errors": {
                        "type": "array",
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
                        "items": {"$ref": "#/components/schemas/Participant"},
                    },
                    "caller_id": _NUMBER,
                    "record": {"type": "boolean"},
                    "reference": {"type": "string", "maxLength": 200},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
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
            "Conference": {
                "type": "object",
                "required": ["id", "status", "participants", "totals"],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "status": {
                        "enum": [
                            "accepted",
                            "dialing",
                            "in_progress",
                            "completed",
                            "failed",
                            "canceled",
                            "unresolved",
                        ]
                    },
                    "provider_conference_id": {"type": ["string", "null"]},
                    "participants": {"type": "array", "items": {"type": "object"}},
                    "totals": {"type": "object"},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/conferences": {
            "post": {
                "summary": "Create a conference and dial its participants",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CreateConference"}
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "Accepted: the command is durable.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Accepted"}
                            }
                        },
                    },
                    "400": _problem("Malformed JSON or missing Idempotency-Key."),
                    "401": _problem("Missing or wrong bearer token."),
                    "413": _problem("Body over 64 KiB."),
                    "415": _problem("Not application/json."),
                    "422": _problem("Invalid field, or key reused with another body."),
                    "503": _problem("A dependency is down; retry with the same key."),
                },
            }
        },
        "/v1/conferences/{conference_id}": {
            "get": {
                "summary": "The conference as the service knows it",
                "parameters": [
                    {
                        "name": "conference_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The conference.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Conference"}
                            }
                        },
                    },
                    "401": _problem("Missing or wrong bearer token."),
                    "404": _problem("No such conference for this caller."),
                },
            }
        },
        "/healthz": {"get": {"security": [], "responses": {"200": {"description": "Alive."}}}},
        "/readyz": {
            "get": {
                "security": [],
                "responses": {
                    "200": {"description": "Postgres and Kafka reachable."},
                    "503": {"description": "Not ready."},
                },
            }
        },
    },
}
