"""Adds on the real store: a conference never finishes over an add it answered 202 for, even
when the two race on the conference row; a number is reserved once; a redelivered add is
accepted once; GET shows a reserved participant as pending."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from service.adapters.postgres import PostgresStore
from service.domain.commands import (
    AddParticipantCommand,
    ConferenceCommand,
    CreateConference,
    ParticipantRequest,
)
from service.domain.conference import AdditionRefused, ConferenceStatus
from service.domain.events import EventType, PendingEvent
from service.handlers import accept_participant_command
from service.ports import ParticipantRefused
from tests.integration.test_cancel_during_accept import waiting_on_a_lock
from tests.waiting import eventually

MAX_DURATION = 3600


async def a_conference(store: PostgresStore) -> uuid.UUID:
    command = ConferenceCommand(
        type="conference.create",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller="billing",
        idempotency_key=uuid.uuid4().hex,
        requested_at=datetime.now(UTC),
        payload=CreateConference.model_validate({"participants": [{"number": "4832830151"}]}),
    )
    event = PendingEvent(uuid.uuid4(), EventType.ACCEPTED, datetime.now(UTC), {})
    assert await store.accept(command, event)
    return command.conference_id


def add(conference_id: uuid.UUID, number: str, key: str) -> AddParticipantCommand:
    return AddParticipantCommand(
        type="participant.add",
        command_id=uuid.uuid4(),
        conference_id=conference_id,
        caller="billing",
        idempotency_key=key,
        requested_at=datetime.now(UTC),
        payload=ParticipantRequest.model_validate({"number": number}),
    )


async def test_a_final_save_racing_a_reservation_waits_and_is_refused(
    store: PostgresStore, database_url: str
) -> None:
    conference_id = await a_conference(store)
    [claimed] = await store.claim_due([ConferenceStatus.ACCEPTED], 1, 30)
    reservation = add(conference_id, "+5511988887777", "add-1")
    blocker, observer = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        # The same key, uncommitted: the reservation waits on its unique index after it has
        # counted its position on the conference row (and so holds that row).
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute(
            "INSERT INTO participant_request (caller, idempotency_key, body_sha256, command_id,"
            " conference_id, position, number, command) VALUES ('billing', 'add-1', 'x', $1,"
            " $2, 9, '+5511900000000', '{}')",
            uuid.uuid4(),
            uuid.uuid4(),
        )
        reserving = asyncio.create_task(
            store.reserve_participant("billing", "add-1", "sha", reservation, MAX_DURATION)
        )
        await eventually(
            lambda: waiting_on_a_lock(observer, "INSERT INTO participant_request"), 10, "the add"
        )
        claimed.status = ConferenceStatus.COMPLETED
        claimed.finalized_at = datetime.now(UTC)
        finishing = asyncio.create_task(store.save(claimed, [], None))
        await eventually(
            lambda: waiting_on_a_lock(observer, "UPDATE conference"), 10, "the final save"
        )
        await blocking.rollback()
        record = await reserving
        assert not await finishing, "the conference must not finish over the reserved add"
    finally:
        await blocker.close()
        await observer.close()
    assert record.position == 1
    view = await store.get("billing", conference_id)
    assert view is not None and view["status"] == "accepted"
    assert view["participants"][-1] == {
        "position": 1,
        "number": "+5511988887777",
        "dial_state": "pending",
    }


async def test_a_finished_conference_refuses_an_add(store: PostgresStore) -> None:
    conference_id = await a_conference(store)
    [claimed] = await store.claim_due([ConferenceStatus.ACCEPTED], 1, 30)
    claimed.status = ConferenceStatus.FAILED
    claimed.finalized_at = datetime.now(UTC)
    assert await store.save(claimed, [], None)
    with pytest.raises(ParticipantRefused) as refused:
        await store.reserve_participant(
            "billing", "late", "sha", add(conference_id, "+5511988887777", "late"), MAX_DURATION
        )
    assert refused.value.reason is AdditionRefused.FINAL


async def test_one_number_two_keys_at_once_one_reservation(store: PostgresStore) -> None:
    conference_id = await a_conference(store)
    attempts = await asyncio.gather(
        *(
            store.reserve_participant(
                "billing",
                f"k{i}",
                "sha",
                add(conference_id, "+5511988887777", f"k{i}"),
                MAX_DURATION,
            )
            for i in range(2)
        ),
        return_exceptions=True,
    )
    reasons = sorted(
        a.reason.value if isinstance(a, ParticipantRefused) else "reserved" for a in attempts
    )
    assert reasons == ["duplicate-number", "reserved"], attempts


async def test_a_reserved_add_is_accepted_once_at_its_position(store: PostgresStore) -> None:
    conference_id = await a_conference(store)
    first = add(conference_id, "+5511988887777", "a")
    second = add(conference_id, "+5511977776666", "b")
    for command in (first, second):
        await store.reserve_participant("billing", command.idempotency_key, "s", command, 3600)
    # Accepted out of order, and the first redelivered: each at the position its 202 gave.
    now = datetime.now(UTC)
    assert await accept_participant_command(store, second, now, MAX_DURATION)
    assert await accept_participant_command(store, first, now, MAX_DURATION)
    assert not await accept_participant_command(store, first, now, MAX_DURATION)
    view = await store.get("billing", conference_id)
    assert view is not None
    assert [(p["position"], p["number"]) for p in view["participants"]] == [
        (0, "+554832830151"),
        (1, "+5511988887777"),
        (2, "+5511977776666"),
    ]
    [claimed] = await store.claim_due([ConferenceStatus.ACCEPTED], 1, 30)
    assert claimed.participant_count == 3 and not claimed.expects_participants
