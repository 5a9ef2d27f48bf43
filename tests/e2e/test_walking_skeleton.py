"""A conference asked for over HTTP ends in Postgres, in the billing view and on the events topic,
through the real api and worker processes, the real broker and database, and the simulator."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from tests.e2e.conftest import Lane, ledger_calls
from tests.e2e.topics import events_by_conference
from tests.waiting import eventually


async def test_conference_posted_over_http_is_completed_billed_and_published(
    lane: Lane, client: httpx.AsyncClient, sim: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await sim.put(
        "/_simulator/scenario",
        json={
            "rules": [
                {"match": r"\+55489", "status": "atendida", "ring_seconds": 3, "talk_seconds": 75}
            ]
        },
    )
    response = await client.post(
        "/v1/conferences",
        headers={"Idempotency-Key": f"skeleton-{uuid.uuid4()}"},
        json={
            "participants": [
                {"number": "4832830151"},
                {"number": "+5548999990000", "record": True},
            ],
            "reference": "ticket-8812",
            "metadata": {"team": "support"},
        },
    )
    assert response.status_code == 202, response.text
    conference_id = response.json()["id"]

    async def completed() -> dict[str, Any] | None:
        view = (await client.get(f"/v1/conferences/{conference_id}")).json()
        return view if view["status"] == "completed" else None

    view = await eventually(completed, 60, "the conference to complete")

    ledger = (await sim.get("/_simulator/ledger")).json()
    calls = {c["number"]: c for c in ledger_calls(ledger, view["provider_conference_id"])}
    assert (
        {p["number"] for p in view["participants"]}
        == set(calls)
        == {
            "+554832830151",
            "+5548999990000",
        }
    )
    for participant in view["participants"]:
        call = calls[participant["number"]]
        assert participant["provider_call_id"] == str(call["id"])
        assert participant["status"] == call["status"] == "atendida"
        assert participant["billed_seconds"] == call["billed_seconds"]
        assert participant["talk_seconds"] == call["talk_seconds"]
        assert participant["duration_seconds"] == call["duration_seconds"]
        assert Decimal(participant["price"]) == Decimal(call["price"])
    assert calls["+5548999990000"]["talk_seconds"] == 75
    assert calls["+5548999990000"]["billed_seconds"] == 120
    assert {
        d["number"]: d["count"]
        for d in ledger["dials"]
        if str(d["conference_id"]) == view["provider_conference_id"]
    } == {
        "+554832830151": 1,
        "+5548999990000": 1,
    }

    rows = await db.fetch(
        "SELECT * FROM billing_conference_call WHERE conference_id = $1 ORDER BY number",
        uuid.UUID(conference_id),
    )
    assert [(r["number"], r["billed_seconds"], r["price"]) for r in rows] == sorted(
        (n, c["billed_seconds"], Decimal(c["price"])) for n, c in calls.items()
    )
    assert all(r["caller"] == "e2e" and r["reference"] == "ticket-8812" for r in rows)

    events = (await events_by_conference(lane, {conference_id}))[conference_id]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "conference.accepted"
    final = events[-1]
    assert final["type"] == "conference.completed"
    assert final["metadata"] == {"team": "support"}
    assert Decimal(final["data"]["totals"]["price"]) == sum(
        Decimal(c["price"]) for c in calls.values()
    )
    assert len({e["event_id"] for e in events}) == len(events)


async def test_bad_input_is_refused_and_never_published(
    lane: Lane, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    key = f"bad-{uuid.uuid4()}"
    response = await client.post(
        "/v1/conferences",
        headers={"Idempotency-Key": key},
        json={"participants": [{"number": "123"}]},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert (
        await db.fetchval("SELECT count(*) FROM ingress_request WHERE idempotency_key = $1", key)
        == 0
    )
