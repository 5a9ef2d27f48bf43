"""The provider corrects itself: a call's status goes A -> B -> A. Each change is an event of its
own with an id of its own, and republishing the events repeats exactly those ids."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from tests.e2e.conftest import Base, open_lane
from tests.e2e.helpers import create_conferences, wait_final
from tests.e2e.topics import read_topic
from tests.waiting import eventually

NUMBER = "4832830155"
# Rings for 200 real seconds at this time scale: long enough to be corrected twice.
SCENARIO = {"rules": [{"match": "5$", "status": "sem resposta", "ring_seconds": 6000}]}


def status_events(
    messages: list[tuple[bytes | None, dict[str, Any]]], conference_id: str
) -> list[dict[str, Any]]:
    return [
        value
        for _, value in messages
        if value["conference_id"] == conference_id and value["type"] == "participant.status_changed"
    ]


async def test_a_status_that_returns_is_a_change_of_its_own_with_its_own_event_id(
    base: Base,
) -> None:
    lane = await open_lane(base, time_scale=30)
    db = await lane.connect()
    try:
        async with lane.api() as api, lane.simulator() as sim:
            assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
            [conference_id] = await create_conferences(
                api, [{"participants": [{"number": NUMBER}]}]
            )

            async def status_is(wanted: str) -> Any:
                row = await db.fetchrow(
                    "SELECT provider_status, provider_call_id FROM participant"
                    " WHERE conference_id = $1",
                    uuid.UUID(conference_id),
                )
                return row if row is not None and row["provider_status"] == wanted else None

            ringing = await eventually(lambda: status_is("chamando"), 60, "the call to ring")
            call = f"/_simulator/calls/{ringing['provider_call_id']}/reported-status"
            assert (await sim.put(call, json={"status": "preparando"})).status_code == 200
            await eventually(lambda: status_is("preparando"), 30, "the provider's correction")
            assert (await sim.put(call, json={"status": None})).status_code == 200
            await eventually(lambda: status_is("chamando"), 30, "the status to return")
            assert (await api.delete(f"/v1/conferences/{conference_id}")).status_code == 202
            await wait_final(db, [conference_id], timeout=60)

        first = status_events(
            await read_topic(
                lane,
                lane.events_topic,
                lambda seen: any(
                    v["conference_id"] == conference_id and v["type"] == "conference.canceled"
                    for _, v in seen
                ),
            ),
            conference_id,
        )
        statuses = [e["data"]["participant"]["status"] for e in first]
        ids = [e["event_id"] for e in first]
        # Everything the outbox holds for the conference goes out again.
        await db.execute(
            "UPDATE outbox SET published_at = NULL, leased_until = NULL WHERE conference_id = $1",
            uuid.UUID(conference_id),
        )
        again = await read_topic(
            lane,
            lane.events_topic,
            lambda seen: (
                Counter(e["event_id"] for e in status_events(seen, conference_id))
                == Counter({i: 2 for i in ids})
            ),
        )
    finally:
        await db.close()
        assert not await lane.close()

    print(f"\nstatus changes {statuses}, event ids distinct: {len(set(ids))} of {len(ids)}")
    assert "chamando,preparando,chamando" in ",".join(statuses)
    assert len(set(ids)) == len(ids)
    republished = status_events(again, conference_id)[len(first) :]
    assert [(e["event_id"], e["sequence"]) for e in republished] == [
        (e["event_id"], e["sequence"]) for e in first
    ]
