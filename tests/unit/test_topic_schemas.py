"""The JSON Schemas in schemas/ are the topics' contract: the command schema is the model's, and
every event the service builds validates against the event schema."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from service.domain.commands import (
    AddParticipantCommand,
    ConferenceCommand,
    CreateConference,
    ParticipantRequest,
    command_schema,
    parse_command,
)
from service.domain.conference import Conference, ConferenceStatus, DialState, Participant
from service.domain.events import EventType, PendingEvent, billing_snapshot, envelope, event_id

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def load(name: str) -> dict[str, object]:
    return dict(json.loads((SCHEMAS / name).read_text()))


def test_command_schema_file_is_the_models_schema() -> None:
    """Regenerate with: python -c 'import json; from service.domain.commands import
    command_schema; print(json.dumps(command_schema(), indent=2, ensure_ascii=False))'
    and keep the `$schema` and `$id` lines."""
    published = load("conference.commands.v1.json")
    for key in ("$schema", "$id"):
        published.pop(key)
    assert published == command_schema()


def test_an_add_as_the_api_publishes_it_validates_and_parses_back() -> None:
    command = AddParticipantCommand(
        type="participant.add",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller="billing",
        idempotency_key="add-1",
        requested_at=datetime.now(UTC),
        payload=ParticipantRequest.model_validate({"number": "4832830151"}),
    )
    jsonschema.validate(command.wire, load("conference.commands.v1.json"))
    assert parse_command(command.wire) == command
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**command.wire, "payload": {"number": "1", "position": 3}},
            load("conference.commands.v1.json"),
        )


def test_a_command_as_the_api_publishes_it_validates() -> None:
    command = ConferenceCommand(
        type="conference.create",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller="billing",
        idempotency_key="k-1",
        requested_at=datetime.now(UTC),
        payload=CreateConference.model_validate({"participants": [{"number": "4832830151"}]}),
    )
    jsonschema.validate(command.model_dump(mode="json"), load("conference.commands.v1.json"))


@pytest.mark.parametrize("bad", [{"type": "conference.delete"}, {"caller": ""}, {"payload": {}}])
def test_malformed_commands_do_not_validate(bad: dict[str, object]) -> None:
    valid = {
        "type": "conference.create",
        "command_id": str(uuid.uuid4()),
        "conference_id": str(uuid.uuid4()),
        "caller": "billing",
        "idempotency_key": "k",
        "requested_at": "2026-11-26T12:00:00Z",
        "payload": {"participants": [{"number": "4832830151"}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**valid, **bad}, load("conference.commands.v1.json"))


def test_final_event_with_billing_validates_and_a_float_price_does_not() -> None:
    conference = Conference(
        id=uuid.uuid4(),
        command_id=uuid.uuid4(),
        caller="billing",
        idempotency_key="k",
        status=ConferenceStatus.COMPLETED,
        reference=None,
        metadata={"team": "support"},
        max_duration_seconds=None,
        accepted_at=datetime.now(UTC),
        provider_conference_id="4921",
        participants=[
            Participant(
                position=0,
                number="+554832830151",
                caller_id=None,
                record=False,
                dial_state=DialState.DIALED,
                provider_call_id="46132",
                provider_status="atendida",
                billed_seconds=60,
                talk_seconds=35,
                duration_seconds=45,
                price=Decimal("0.12"),
            )
        ],
    )
    event = PendingEvent(
        event_id(conference.id, EventType.COMPLETED),
        EventType.COMPLETED,
        datetime.now(UTC),
        billing_snapshot(conference),
    )
    value = json.loads(json.dumps(envelope(conference, event, 7)))
    schema = load("conference.events.v1.json")
    jsonschema.validate(value, schema)
    value["data"]["participants"][0]["price"] = 0.12
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, schema)
