"""A retry means the same thing at any pod, and an account the provider refuses makes the
dialer wait instead of failing every conference accepted meanwhile."""

from __future__ import annotations

import re
import uuid

import httpx

from tests.e2e.conftest import API_TOKEN, Base, _healthy, free_port, open_lane
from tests.e2e.helpers import create_conferences, ledger, wait_final
from tests.waiting import eventually

BODY_8 = {"participants": [{"number": f"48328{i:05d}"} for i in range(8)]}
BODY_4 = {"participants": [{"number": f"48329{i:05d}"} for i in range(4)]}


async def test_a_replay_at_another_api_process_is_not_charged_against_the_budget(
    base: Base,
) -> None:
    lane = await open_lane(base, time_scale=60, workers=0, CALLER_PARTICIPANTS_PER_MINUTE="10")
    try:
        port = free_port()
        lane.start("api", "api", "--port", str(port))
        other_url = f"http://127.0.0.1:{port}"
        await eventually(lambda: _healthy(f"{other_url}/readyz"), 60, "the second api")
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with (
            lane.api() as pod_a,
            httpx.AsyncClient(base_url=other_url, headers=auth) as pod_b,
        ):
            key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
            first = await pod_a.post("/v1/conferences", json=BODY_8, headers=key)
            spent = await pod_b.post(
                "/v1/conferences", json=BODY_4, headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            retry = await pod_b.post("/v1/conferences", json=BODY_8, headers=key)
    finally:
        assert not await lane.close()

    assert first.status_code == 202, first.text
    assert spent.status_code == 202, spent.text  # pod B: 4 of its 10 a minute spent
    assert retry.status_code == 202, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]


async def _paused(metrics_url: str) -> float | None:
    async with httpx.AsyncClient(timeout=2) as client:
        text = (await client.get(metrics_url)).text
    match = re.search(r"^conference_provider_account_paused ([0-9.]+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


async def test_an_account_outage_pauses_the_dialer_and_every_conference_completes_after(
    base: Base,
) -> None:
    lane = await open_lane(base, time_scale=60, workers=0)
    db = await lane.connect()
    try:
        worker = lane.start_worker()
        await lane.ready(worker)
        metrics_url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
        async with lane.api() as api, lane.simulator() as sim:
            outage = {"errors": {"POST /conferencia": {"403": 1.0}}}
            assert (await sim.put("/_simulator/scenario", json=outage)).status_code == 200
            bodies = [{"participants": [{"number": f"4833{i:06d}"}]} for i in range(6)]
            ids = await create_conferences(api, bodies)

            async def refused_twice() -> bool:
                counts = (await ledger(sim))["requests"].get("POST /conferencia", {})
                return int(counts.get("403", 0)) >= 2 and await _paused(metrics_url) == 1

            await eventually(refused_twice, 60, "the dialer to be refused and pause")
            during = await db.fetch("SELECT status FROM conference WHERE id = ANY($1::uuid[])", ids)
            assert {r["status"] for r in during} == {"accepted"}, during

            assert (await sim.put("/_simulator/scenario", json={})).status_code == 200
            rows = await wait_final(db, ids, timeout=120)

            async def recovered() -> bool:
                return await _paused(metrics_url) == 0

            await eventually(recovered, 10, "the pause metric to fall")
            refusals = (await ledger(sim))["requests"]["POST /conferencia"]
    finally:
        await db.close()
        assert not await lane.close()

    statuses = {r["status"] for r in rows.values()}
    print(f"\naccount outage: create answered {refusals}; after it, conferences {statuses}")
    assert statuses == {"completed"}
