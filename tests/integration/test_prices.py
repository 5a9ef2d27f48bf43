"""Prices are stored and shown exactly: six decimal places survive the store, the API's view
and the billing view."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from service.adapters.postgres import PostgresStore
from service.domain.commands import ConferenceCommand, CreateConference
from service.domain.conference import ConferenceStatus, DialState
from service.domain.events import EventType, PendingEvent


async def test_a_six_decimal_price_round_trips_exactly(
    store: PostgresStore, database_url: str
) -> None:
    command = ConferenceCommand(
        type="conference.create",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller="billing",
        idempotency_key="exact",
        requested_at=datetime.now(UTC),
        payload=CreateConference.model_validate(
            {"participants": [{"number": "4832830151"}, {"number": "4832830152"}]}
        ),
    )
    event = PendingEvent(uuid.uuid4(), EventType.ACCEPTED, datetime.now(UTC), {})
    assert await store.accept(command, event)
    [conference] = await store.claim_due([ConferenceStatus.ACCEPTED], 10, 60)
    conference.status = ConferenceStatus.COMPLETED
    conference.provider_conference_id = "77"
    conference.finalized_at = datetime.now(UTC)
    for participant, price in zip(
        conference.participants, [Decimal("0.123456"), Decimal("0.12")], strict=True
    ):
        participant.dial_state = DialState.DIALED
        participant.provider_call_id = f"77-{participant.position}"
        participant.billed_seconds = 30
        participant.price = price
    assert await store.save(conference, [], None)

    view = await store.get("billing", command.conference_id)
    connection = await asyncpg.connect(database_url)
    try:
        billed = await connection.fetch(
            "SELECT price FROM billing_conference_call ORDER BY provider_call_id"
        )
    finally:
        await connection.close()

    assert view is not None
    assert [p["price"] for p in view["participants"]] == ["0.123456", "0.1200"]
    assert view["totals"]["price"] == "0.243456"
    assert [r["price"] for r in billed] == [Decimal("0.123456"), Decimal("0.120000")]
