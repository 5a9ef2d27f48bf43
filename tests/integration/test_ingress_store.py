"""The api's idempotency store on a real Postgres: requests that arrive together share one
INSERT, and each still gets exactly the answer stored under its own key."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from service.adapters.postgres import PostgresStore, open_pool
from service.domain.commands import ConferenceCommand, CreateConference


def command(caller: str, key: str) -> ConferenceCommand:
    return ConferenceCommand(
        type="conference.create",
        command_id=uuid.uuid4(),
        conference_id=uuid.uuid4(),
        caller=caller,
        idempotency_key=key,
        requested_at=datetime.now(UTC),
        payload=CreateConference.model_validate({"participants": [{"number": "4832830151"}]}),
    )


async def stored_keys(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM ingress_request"))
    finally:
        await connection.close()


async def test_a_burst_of_keys_each_gets_its_own_conference(
    store: PostgresStore, database_url: str
) -> None:
    commands = [command(f"caller-{i % 3}", f"key-{i}") for i in range(300)]

    records = await asyncio.gather(
        *(
            store.remember(c.caller, c.idempotency_key, f"sha-{i}", c)
            for i, c in enumerate(commands)
        )
    )

    assert [r.conference_id for r in records] == [c.conference_id for c in commands]
    assert [r.body_sha256 for r in records] == [f"sha-{i}" for i in range(300)]
    assert [r.command for r in records] == [c.wire for c in commands]
    assert await stored_keys(database_url) == 300


async def test_one_key_sent_together_and_later_answers_the_first_stored(
    store: PostgresStore, database_url: str
) -> None:
    # The same key from the same caller five times at once, beside another caller's same key.
    same = [command("billing", "retry-me") for _ in range(5)]
    other = command("support", "retry-me")

    records = await asyncio.gather(
        *(store.remember(c.caller, c.idempotency_key, "sha", c) for c in [*same, other])
    )
    later = await store.remember("billing", "retry-me", "sha", command("billing", "retry-me"))

    winners = {r.conference_id for r in records[:5]}
    assert len(winners) == 1 and winners <= {c.conference_id for c in same}
    assert records[5].conference_id == other.conference_id
    assert later.conference_id in winners
    assert await stored_keys(database_url) == 2


async def test_when_the_database_fails_every_waiting_request_fails(database_url: str) -> None:
    pool = await open_pool(database_url)
    store = PostgresStore(pool, "conference.events.v1")
    await pool.close()  # every acquire now fails
    commands = [command("billing", f"key-{i}") for i in range(20)]

    results = await asyncio.wait_for(
        asyncio.gather(
            *(store.remember(c.caller, c.idempotency_key, "sha", c) for c in commands),
            return_exceptions=True,
        ),
        timeout=10,
    )

    assert all(isinstance(result, Exception) for result in results)
