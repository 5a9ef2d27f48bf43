"""What callers ask for: the create-conference body (canonical or the provider's seed form), the
add-participant body, and the commands that carry them over Kafka."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from service.domain.numbers import to_e164

MAX_PARTICIPANTS = 10
MAX_METADATA_BYTES = 4096

PhoneNumber = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(to_e164)]

NUL_REFUSED = "must not contain NUL characters"


def _storable(text: str) -> str:
    """Postgres text and jsonb cannot hold a NUL character. The rule lives in the model so the
    api and the consumer (commands produced straight to Kafka) refuse the same values."""
    if "\x00" in text:
        raise ValueError(NUL_REFUSED)
    return text


StorableText = Annotated[str, AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ParticipantRequest(_Strict):
    number: PhoneNumber
    caller_id: PhoneNumber | None = None
    # Strict, as the OpenAPI document says: "yes", 1, "600" and 600.0 are not what was meant.
    record: StrictBool | None = None


class CreateConference(_Strict):
    """The canonical body of `POST /v1/conferences` and of a command's `payload`."""

    participants: list[ParticipantRequest] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    caller_id: PhoneNumber | None = None
    record: StrictBool = False
    reference: StorableText | None = Field(default=None, max_length=200)
    metadata: dict[str, StorableText] = Field(default_factory=dict)
    max_duration_seconds: StrictInt | None = Field(default=None, ge=60, le=24 * 3600)

    @model_validator(mode="before")
    @classmethod
    def _from_provider_seed_form(cls, body: Any) -> Any:
        """The provider's documented create body means one participant; the audio-only fields
        (`url_conferencia`, `resposta_usuario`) have no meaning for a conference and are dropped."""
        if not isinstance(body, dict) or "numero_destino" not in body:
            return body
        seed_keys = {
            "numero_destino",
            "url_conferencia",
            "resposta_usuario",
            "gravar_conferencia",
            "bina",
        }
        rest = {k: v for k, v in body.items() if k not in seed_keys}
        if "participants" in rest:
            raise ValueError("send either participants or numero_destino, not both")
        canonical: dict[str, Any] = {"participants": [{"number": body["numero_destino"]}], **rest}
        if body.get("bina") is not None:
            canonical.setdefault("caller_id", body["bina"])
        if body.get("gravar_conferencia") is not None:
            canonical.setdefault("record", body["gravar_conferencia"])
        return canonical

    @field_validator("participants")
    @classmethod
    def _distinct_numbers(cls, participants: list[ParticipantRequest]) -> list[ParticipantRequest]:
        numbers = [p.number for p in participants]
        if len(set(numbers)) != len(numbers):
            raise ValueError("participants must have distinct numbers")
        return participants

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, metadata: dict[str, str]) -> dict[str, str]:
        if any("\x00" in name for name in metadata):
            raise ValueError(f"names {NUL_REFUSED}")
        if len(json.dumps(metadata, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON")
        return metadata


class _Command(_Strict):
    """What every command on the topic carries besides its `type` and `payload`."""

    type: str
    command_id: UUID
    conference_id: UUID
    caller: StorableText = Field(min_length=1, max_length=100)
    idempotency_key: str = Field(min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$")
    requested_at: datetime

    @functools.cached_property
    def wire(self) -> dict[str, Any]:
        """The command as JSON values, exactly as it is stored and published (made once)."""
        return self.model_dump(mode="json")


class ConferenceCommand(_Command):
    """The value on `conference.commands.v1`. Other services may produce it directly."""

    type: Literal["conference.create"]
    payload: CreateConference


class AddParticipantCommand(_Command):
    """One participant for a conference that is already running: the body of
    `POST /v1/conferences/{id}/participants` as its `payload`. Dialed with the same protocol as
    the participants of a create; its position is the next one free when it is accepted (or
    the one the api reserved for it and answered with)."""

    type: Literal["participant.add"]
    payload: ParticipantRequest


Command: TypeAlias = ConferenceCommand | AddParticipantCommand


def command_schema() -> dict[str, Any]:
    """The JSON Schema of a value on the topic (schemas/conference.commands.v1.json)."""
    union = Annotated[ConferenceCommand | AddParticipantCommand, Field(discriminator="type")]
    schema = TypeAdapter(union).json_schema(mode="validation")
    schema["description"] = (
        "A value on `conference.commands.v1` (key: the conference id): a create or an add. "
        "Other services may produce it directly."
    )
    return schema


def parse_command(value: Any) -> Command:
    """A command off the topic, by its `type` (a create unless it says `participant.add`, so a
    value of no known type is reported against the create's fields)."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "participant.add":
        return AddParticipantCommand.model_validate(value)
    return ConferenceCommand.model_validate(value)


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """pydantic's report as the `errors` list of our problem+json bodies."""
    return [
        {
            "field": ".".join(str(part) for part in e["loc"]) or "body",
            "message": str(e["msg"]).removeprefix("Value error, "),
        }
        for e in error.errors(include_url=False, include_input=False)
    ]
