"""`reconcile` on a real Postgres: an unreachable database is "could not run" (2), never
"discrepancies" (1); and a correction is written even when the poller wants the same conference
at the same moment."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from service.adapters.postgres import PostgresStore
from service.domain.commands import ConferenceCommand, CreateConference
from service.domain.conference import ConferenceStatus, DialState
from service.domain.events import EventType, PendingEvent
from service.domain.ledger import Adjustment
from tests.databases import ROOT
from tests.e2e.conftest import free_port

LEASE = 60.0


def test_reconcile_with_postgres_unreachable_exits_2() -> None:
    closed = free_port()  # bound and released: nothing listens there
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "reconcile",
            "--from",
            "2026-11-25",
            "--to",
            "2026-11-26",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": f"postgresql://conference:conference@127.0.0.1:{closed}/conference",
            "TOTALVOICE_BASE_URL": "http://127.0.0.1:9",
            "TOTALVOICE_ACCESS_TOKEN": "token",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr


async def in_progress_conference(store: PostgresStore, provider_id: str) -> uuid.UUID:
    """A conference dialed at the provider and due for its next poll now."""
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
    [conference] = await store.claim_due([ConferenceStatus.ACCEPTED], 10, LEASE)
    conference.status = ConferenceStatus.IN_PROGRESS
    conference.provider_conference_id = provider_id
    [participant] = conference.participants
    participant.dial_state = DialState.DIALED
    participant.provider_call_id = f"{provider_id}-1"
    assert await store.save(conference, [], 0.0)
    return conference.id


async def test_the_poller_cannot_take_a_conference_reconcile_is_correcting(
    store: PostgresStore, database_url: str
) -> None:
    conference_id = await in_progress_conference(store, "4242")

    claimed, ours = await store.claim_for_reconcile("4242", LEASE)
    assert claimed is not None and ours
    # The poller looks for due work while reconcile is working on it.
    polled = await store.claim_due([ConferenceStatus.IN_PROGRESS], 10, LEASE)
    claimed.participants[0].price = Decimal("0.123456")
    claimed.participants[0].billed_seconds = 42
    saved = await store.save(claimed, [], 0.0)

    assert polled == []
    assert saved
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            "SELECT billed_seconds, leased_until FROM participant JOIN conference c"
            " ON c.id = conference_id WHERE conference_id = $1",
            conference_id,
        )
    finally:
        await connection.close()
    assert row["billed_seconds"] == 42 and row["leased_until"] is None
    # Saved with "look now": the poller carries on from the corrected state.
    [after] = await store.claim_due([ConferenceStatus.IN_PROGRESS], 10, LEASE)
    assert after.participants[0].billed_seconds == 42


async def test_adjustments_are_appended_once_and_fenced_by_the_claim(
    store: PostgresStore, database_url: str
) -> None:
    conference_id = await in_progress_conference(store, "4343")
    run_id = await store.start_reconcile_run(datetime.now(UTC), datetime.now(UTC))
    claimed, _ = await store.claim_for_reconcile("4343", LEASE)
    assert claimed is not None
    claimed.participants[0].price = Decimal("0.100000")
    claimed.participants[0].settled_at = datetime.now(UTC)
    adjustment = Adjustment(
        conference_id,
        0,
        "4343-1",
        "price",
        1,
        "0.1000",
        "0.123456",
        "report",
        run_id,
        datetime.now(UTC),
    )
    event = PendingEvent(adjustment.event_id, EventType.RECONCILED, datetime.now(UTC), {})
    assert await store.save_reconciliation(claimed, [adjustment], [event], None)

    again, _ = await store.claim_for_reconcile("4343", LEASE)
    assert again is not None
    stale = copy.deepcopy(again)
    stale.claim_token = uuid.uuid4()
    assert not await store.save_reconciliation(stale, [adjustment], [event], None)
    assert await store.save_reconciliation(again, [adjustment], [event], None)

    assert await store.adjustments(conference_id) == [adjustment]
    connection = await asyncpg.connect(database_url)
    try:
        price = await connection.fetchval(
            "SELECT price FROM participant WHERE conference_id = $1", conference_id
        )
        events = await connection.fetchval(
            "SELECT count(*) FROM outbox WHERE event_id = $1", adjustment.event_id
        )
    finally:
        await connection.close()
    assert price == Decimal("0.100000") and events == 1
