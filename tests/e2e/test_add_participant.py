"""Adding a participant to a running conference, through the real api, broker, worker and
database, against the simulator: counted as one dial by the provider, billed in the view and in
the final event; refused with 409 once the conference is over; one participant for one key;
one 202 and one 422 for one number under two keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import Base, Lane, ledger_calls, open_lane
from tests.e2e.helpers import ledger, validate_events
from tests.e2e.topics import events_by_conference
from tests.waiting import eventually

# Simulated seconds (the lane runs 30 a second): the first participants talk ten minutes, so
# the conference is still running when the add arrives; added numbers talk half a minute.
SCENARIO = {
    "rules": [
        {"match": "1$", "status": "atendida", "ring_seconds": 3, "talk_seconds": 600},
        {"match": "7$", "status": "atendida", "ring_seconds": 3, "talk_seconds": 30},
        {"match": "9$", "status": "atendida", "ring_seconds": 3, "talk_seconds": 10},
    ]
}
_serial = iter(range(10**6))


def number(ending: str) -> str:
    return f"+5511{9_1000_0000 + next(_serial) * 10 + int(ending):09d}"


@pytest.fixture(scope="module")
async def lane(base: Base) -> AsyncIterator[Lane]:
    added = await open_lane(base, time_scale=30)
    async with added.simulator() as sim:
        assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
    yield added
    unclean = await added.close()
    assert not unclean, unclean


async def create(client: httpx.AsyncClient, *numbers: str) -> str:
    response = await client.post(
        "/v1/conferences",
        headers={"Idempotency-Key": str(uuid.uuid4())},
        json={"participants": [{"number": n} for n in numbers]},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def view_when(
    client: httpx.AsyncClient, conference_id: str, wanted: str, timeout: float = 60
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        view = dict((await client.get(f"/v1/conferences/{conference_id}")).json())
        if wanted == "talking":
            dialed = all(p["dial_state"] == "dialed" for p in view["participants"])
            return view if view["status"] == "in_progress" and dialed else None
        return view if view["status"] == wanted else None

    return await eventually(reached, timeout, f"conference {conference_id} {wanted}")


def add(client: httpx.AsyncClient, conference_id: str, participant: str, key: str) -> Any:
    return client.post(
        f"/v1/conferences/{conference_id}/participants",
        headers={"Idempotency-Key": key},
        json={"number": participant},
    )


def dials_of(provider: dict[str, Any], provider_conference_id: str, participant: str) -> int:
    return sum(
        int(d["count"])
        for d in provider["dials"]
        if str(d["conference_id"]) == provider_conference_id and d["number"] == participant
    )


async def test_a_running_conference_gets_a_participant_dialed_once_and_billed(
    lane: Lane, db: asyncpg.Connection
) -> None:
    first, second, joining = number("1"), number("1"), number("7")
    async with lane.api() as client, lane.simulator() as sim:
        conference_id = await create(client, first, second)
        running = await view_when(client, conference_id, "talking")
        answer = await add(client, conference_id, joining, f"add-{uuid.uuid4()}")
        assert answer.status_code == 202, answer.text
        assert answer.json()["position"] == 2
        view = await view_when(client, conference_id, "completed", timeout=120)
        provider = await ledger(sim)

    provider_id = running["provider_conference_id"]
    assert dials_of(provider, provider_id, joining) == 1
    assert {p["number"] for p in view["participants"]} == {first, second, joining}
    call = {c["number"]: c for c in ledger_calls(provider, provider_id)}[joining]
    [billed] = await db.fetch(
        "SELECT * FROM billing_conference_call WHERE conference_id = $1 AND number = $2",
        uuid.UUID(conference_id),
        joining,
    )
    assert (billed["billed_seconds"], billed["price"], billed["provider_call_id"]) == (
        call["billed_seconds"],
        Decimal(call["price"]),
        str(call["id"]),
    )
    events = (await events_by_conference(lane, {conference_id}))[conference_id]
    validate_events(events)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    [added] = [e for e in events if e["type"] == "participant.added"]
    assert (added["data"]["position"], added["data"]["number"]) == (2, joining)
    final = events[-1]
    assert final["type"] == "conference.completed"
    [snapshot] = [p for p in final["data"]["participants"] if p["number"] == joining]
    assert (snapshot["billed_seconds"], Decimal(snapshot["price"])) == (
        call["billed_seconds"],
        Decimal(call["price"]),
    )
    print(
        f"\nadd-participant: conference {conference_id}: {joining} dialed "
        f"{dials_of(provider, provider_id, joining)} time(s), billed {billed['billed_seconds']} s "
        f"at {billed['price']} in the view and the final event"
    )


async def test_a_finished_conference_refuses_an_add_and_nobody_is_dialed(lane: Lane) -> None:
    late = number("7")
    async with lane.api() as client, lane.simulator() as sim:
        conference_id = await create(client, number("9"))
        finished = await view_when(client, conference_id, "completed", timeout=90)
        answer = await add(client, conference_id, late, "late-add")
        provider = await ledger(sim)
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/conference-final")
    assert dials_of(provider, finished["provider_conference_id"], late) == 0
    assert not any(d["number"] == late for d in provider["dials"])


async def test_one_key_adds_once_and_one_number_under_two_keys_is_refused_once(
    lane: Lane, db: asyncpg.Connection
) -> None:
    replayed, contested = number("7"), number("7")
    async with lane.api() as client, lane.simulator() as sim:
        conference_id = await create(client, number("1"))
        running = await view_when(client, conference_id, "talking")
        key = f"same-{uuid.uuid4()}"
        first = await add(client, conference_id, replayed, key)
        again = await add(client, conference_id, replayed, key)
        rivals = await asyncio.gather(
            add(client, conference_id, contested, f"rival-a-{uuid.uuid4()}"),
            add(client, conference_id, contested, f"rival-b-{uuid.uuid4()}"),
        )

        async def both_dialed() -> bool:
            provider = await ledger(sim)
            return all(
                dials_of(provider, running["provider_conference_id"], n) >= 1
                for n in (replayed, contested)
            )

        await eventually(both_dialed, 60, "the added numbers to be dialed")
        await view_when(client, conference_id, "completed", timeout=120)
        provider = await ledger(sim)

    assert (first.status_code, again.status_code) == (202, 202), (first.text, again.text)
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["position"] == again.json()["position"]
    assert sorted(r.status_code for r in rivals) == [202, 422], [r.text for r in rivals]
    [refused] = [r for r in rivals if r.status_code == 422]
    assert refused.json()["type"].endswith("/duplicate-number")
    rows = await db.fetch(
        "SELECT number FROM participant WHERE conference_id = $1", uuid.UUID(conference_id)
    )
    assert sorted(r["number"] for r in rows).count(replayed) == 1
    assert sorted(r["number"] for r in rows).count(contested) == 1
    for participant in (replayed, contested):
        assert dials_of(provider, running["provider_conference_id"], participant) == 1
