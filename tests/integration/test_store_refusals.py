"""What Postgres refuses as data becomes the port's `CommandRefusedByStore`, with nothing
stored, whatever the model let through."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from service.domain.commands import ConferenceCommand, CreateConference, ParticipantRequest
from service.domain.events import EventType, PendingEvent
from service.ports import CommandIdReused, CommandRefusedByStore


def unchecked_command(**payload: Any) -> ConferenceCommand:
    """A command built without the model's rules, as a careless producer could write it."""
    return ConferenceCommand.model_construct(
        type="conference.create",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller="billing",
        idempotency_key=f"key-{uuid.uuid4().hex[:8]}",
        requested_at=datetime.now(UTC),
        payload=CreateConference.model_construct(
            participants=[ParticipantRequest(number="4832830151")], **payload
        ),
    )


def accepted_event() -> PendingEvent:
    return PendingEvent(uuid.uuid4(), EventType.ACCEPTED, datetime.now(UTC), {})


@pytest.mark.parametrize(
    "payload",
    [
        {"reference": "a\x00b"},  # text: CharacterNotInRepertoireError
        {"metadata": {"team": "a\x00b"}},  # jsonb: UntranslatableCharacterError
        {"max_duration_seconds": 2**40},  # integer column: out of range
    ],
    ids=["nul-in-text", "nul-in-jsonb", "integer-out-of-range"],
)
async def test_values_postgres_refuses_are_a_refused_command_and_nothing_is_stored(
    store: Any, database_url: str, payload: dict[str, Any]
) -> None:
    with pytest.raises(CommandRefusedByStore):
        await store.accept(unchecked_command(**payload), accepted_event())

    connection = await asyncpg.connect(database_url)
    try:
        counts = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM conference) AS conferences,"
            "       (SELECT count(*) FROM command_key) AS keys,"
            "       (SELECT count(*) FROM outbox) AS events"
        )
    finally:
        await connection.close()
    assert dict(counts) == {"conferences": 0, "keys": 0, "events": 0}


@pytest.mark.parametrize("reused", ["command_id", "conference_id"])
async def test_a_command_reusing_an_id_with_another_key_is_refused_and_leaves_no_key(
    store: Any, database_url: str, reused: str
) -> None:
    first = unchecked_command()
    assert await store.accept(first, accepted_event())
    # The same id, a new other id and a new key: another command, not a redelivery.
    other = first.model_copy(
        update={
            "command_id": uuid.uuid4(),
            "conference_id": uuid.uuid4(),
            reused: getattr(first, reused),
            "idempotency_key": "a-key-never-used",
        }
    )
    with pytest.raises(CommandIdReused):
        await store.accept(other, accepted_event())
    # The redelivery of the first is still a duplicate, quietly.
    assert not await store.accept(first, accepted_event())

    connection = await asyncpg.connect(database_url)
    try:
        keys = await connection.fetch("SELECT idempotency_key FROM command_key")
        conferences = await connection.fetchval("SELECT count(*) FROM conference")
    finally:
        await connection.close()
    assert [k["idempotency_key"] for k in keys] == [first.idempotency_key]
    assert conferences == 1
