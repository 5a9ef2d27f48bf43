"""A webhook flood is no lever on the provider budget: for a conference in progress it buys at
most one poll per nudge interval, for a final one none. Evidence: the simulator's count of GETs
per conference."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.conftest import WEBHOOK_SECRET, Base, Lane, open_lane
from tests.e2e.helpers import create_conferences, ledger, wait_final
from tests.waiting import eventually

NUDGE_INTERVAL = 5.0
FLOOD_SECONDS = 10.0
PER_SECOND = 20
LONG, SHORT = "4832831111", "4832832222"
SCENARIO = {
    "rules": [
        {"match": LONG, "status": "atendida", "ring_seconds": 1, "talk_seconds": 3600},
        {"match": SHORT, "status": "atendida", "ring_seconds": 1, "talk_seconds": 1},
    ]
}


@pytest.fixture(scope="module")
async def hooked(base: Base) -> AsyncIterator[Lane]:
    # Real time, and polls as production spaces them with webhooks on (every 96-144 s): in the
    # flood's 10 s a conference in progress has no poll of its own due, so every GET counted
    # is a nudge's.
    lane = await open_lane(
        base,
        time_scale=1,
        WEBHOOKS_ENABLED="true",
        WEBHOOK_NUDGE_INTERVAL_SECONDS=str(NUDGE_INTERVAL),
    )
    async with lane.simulator() as sim:
        assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
    # The provider's own callbacks are what settle the short conference without a poll.
    await lane.register_webhooks()
    yield lane
    assert not await lane.close()


async def test_a_webhook_flood_buys_a_bounded_number_of_provider_gets(hooked: Lane) -> None:
    async with hooked.api() as client, hooked.simulator() as sim:
        db = await hooked.connect()
        try:
            long_id, short_id = await create_conferences(
                client,
                [{"participants": [{"number": LONG}]}, {"participants": [{"number": SHORT}]}],
            )
            await wait_final(db, [short_id], 90)

            async def in_progress() -> bool:
                status = await db.fetchval(
                    "SELECT status FROM conference WHERE id = $1", uuid.UUID(long_id)
                )
                return bool(status == "in_progress")

            await eventually(in_progress, 60, "the long conference to be in progress")
            refs = {}
            for conference_id in (long_id, short_id):
                refs[conference_id] = await db.fetchrow(
                    """
                    SELECT c.provider_conference_id, p.provider_call_id
                      FROM conference c JOIN participant p ON p.conference_id = c.id
                     WHERE c.id = $1
                    """,
                    uuid.UUID(conference_id),
                )
        finally:
            await db.close()
        before = (await ledger(sim))["get_count_by_conference"]

        hook = f"/v1/webhooks/totalvoice/{WEBHOOK_SECRET}"
        answers: list[int] = []
        async with httpx.AsyncClient(base_url=hooked.api_url, timeout=10) as provider:
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < FLOOD_SECONDS:
                batch = []
                for ref in refs.values():
                    batch.append({"conferencia_id": ref["provider_conference_id"]})
                    batch.append({"chamada_id": ref["provider_call_id"], "status": "atendida"})
                responses = await asyncio.gather(
                    *(
                        provider.post(hook, json=body)
                        for _ in range(PER_SECOND // 2)
                        for body in batch
                    )
                )
                answers += [r.status_code for r in responses]
                sent += 1
                await asyncio.sleep(max(0.0, started + sent - time.monotonic()))
            # A nudge made during the flood may be served just after it.
            await asyncio.sleep(2)
        after = (await ledger(sim))["get_count_by_conference"]

    def gets(conference_id: str) -> int:
        provider_id = str(refs[conference_id]["provider_conference_id"])
        return int(after.get(provider_id, 0)) - int(before.get(provider_id, 0))

    # One nudge at the debounce, then at most one per interval; the 2 s after the flood end.
    bound = 1 + math.ceil((FLOOD_SECONDS + 2) / NUDGE_INTERVAL)
    print(
        f"\nwebhook flood: {len(answers)} callbacks in {FLOOD_SECONDS:g} s "
        f"({sum(1 for a in answers if a == 204)} answered 204); provider GETs for the conference "
        f"in progress: {gets(long_id)} (bound {bound}), for the final one: {gets(short_id)}"
    )
    assert set(answers) <= {204, 503}
    assert 1 <= gets(long_id) <= bound
    assert gets(short_id) == 0
