"""A conference asked for over HTTP ends in Postgres, in the billing view and on the events topic,
through the real api and worker processes, the real broker and database, and the simulator."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

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


async def scrape(url: str) -> dict[str, float]:
    """Every sample of a /metrics page, by `name{labels}`."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.split("{")[0] == name and all(w in key for w in wanted)
    )


async def test_metrics_after_a_run_show_each_operational_figure(
    lane: Lane, client: httpx.AsyncClient
) -> None:
    # The conference test above ran through this lane; make sure one more completes here.
    response = await client.post(
        "/v1/conferences",
        headers={"Idempotency-Key": f"metrics-{uuid.uuid4()}"},
        json={"participants": [{"number": "4832830199"}]},
    )
    conference_id = response.json()["id"]

    async def done() -> bool:
        view = (await client.get(f"/v1/conferences/{conference_id}")).json()
        return view["status"] == "completed"

    await eventually(done, 60, "the conference to complete")
    [worker] = [p for p in lane.processes if p.name == "worker"]
    api = await scrape(f"{lane.api_url}/metrics")

    async def worker_sampled() -> dict[str, float] | None:
        samples = await scrape(f"http://127.0.0.1:{worker.metrics_port}/metrics")
        return samples if total(samples, "conference_time_to_final_seconds_count") >= 1 else None

    work = await eventually(worker_sampled, 30, "the worker's metrics")

    assert (
        total(
            api,
            "conference_http_request_duration_seconds_count",
            route="create_conference",
            status="202",
        )
        >= 1
    )
    assert total(api, "conference_commands_accepted_total") >= 1
    assert total(work, "conference_commands_consumed_total", outcome="accepted") >= 1
    assert 'conference_commands_consumed_total{outcome="dead_lettered"}' in work
    assert (
        total(
            work,
            "conference_provider_request_duration_seconds_count",
            endpoint="GET /conferencia/{id}",
            outcome="ok",
        )
        >= 1
    )
    assert (
        total(
            work,
            "conference_provider_request_duration_seconds_count",
            endpoint="POST /conferencia/{id}",
            outcome="ok",
        )
        >= 1
    )
    assert total(work, "conference_polls_per_conference_count") >= 1
    assert (
        0
        < total(work, "conference_time_to_final_seconds_sum")
        / total(work, "conference_time_to_final_seconds_count")
        < 60
    )
    assert total(work, "conference_finalized_total", status="completed") >= 1
    assert total(work, "conference_finalized_total", status="unresolved") == 0
    lags = [v for k, v in work.items() if k.startswith("conference_consumer_lag{")]
    assert lags and all(v >= 0 for v in lags)
    for gauge in (
        "conference_outbox_backlog",
        "conference_overdue_polls",
        "conference_reconcile_discrepancies",
    ):
        assert f"{gauge}{{}}" in work and work[f"{gauge}{{}}"] >= 0
