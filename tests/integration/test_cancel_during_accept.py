"""A cancel that arrives while the worker is accepting the same conference is never lost: the
conference the worker stores carries it, whichever of the two commits first."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from service.adapters.postgres import PostgresStore
from service.domain.commands import ConferenceCommand, CreateConference
from service.domain.events import EventType, PendingEvent
from tests.waiting import eventually


async def waiting_on_a_lock(observer: asyncpg.Connection, statement: str) -> bool:
    return bool(
        await observer.fetchval(
            "SELECT true FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' LIMIT 1",
            statement,
        )
    )


async def test_a_cancel_while_accept_is_mid_way_is_stored_on_the_conference(
    store: PostgresStore, database_url: str
) -> None:
    command = ConferenceCommand(
        type="conference.create",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller="billing",
        idempotency_key="cancel-me",
        requested_at=datetime.now(UTC),
        payload=CreateConference.model_validate({"participants": [{"number": "4832830151"}]}),
    )
    event = PendingEvent(uuid.uuid4(), EventType.ACCEPTED, datetime.now(UTC), {})
    await store.remember(command.caller, command.idempotency_key, "sha", command)
    blocker, observer = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        # An uncommitted outbox row with the accept's event id: accept waits on it for the
        # unique index, after its conference row is inserted and before it commits.
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute(
            "INSERT INTO outbox (event_id, conference_id, sequence, topic, key, value)"
            " VALUES ($1, $2, 1, 't', 'k', '{}')",
            event.event_id,
            command.conference_id,
        )
        accepting = asyncio.create_task(store.accept(command, event))
        await eventually(
            lambda: waiting_on_a_lock(observer, "INSERT INTO outbox"), 10, "accept to wait"
        )

        cancelling = asyncio.create_task(store.request_cancel("billing", command.conference_id))

        async def cancel_answered_or_waiting() -> bool:
            return cancelling.done() or await waiting_on_a_lock(observer, "UPDATE ingress_request")

        await eventually(cancel_answered_or_waiting, 10, "the cancel to answer or to wait")
        await blocking.rollback()
        assert await asyncio.wait_for(accepting, 10)
        status = await asyncio.wait_for(cancelling, 10)
        stored = await observer.fetchval(
            "SELECT cancel_requested_at FROM conference WHERE id = $1", command.conference_id
        )
    finally:
        await blocker.close()
        await observer.close()
    assert status in {"accepted", "dialing"}
    assert stored is not None, "the cancel was answered 202 but the conference will be dialed"
