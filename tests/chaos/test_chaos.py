"""Break things on purpose and check the guarantees: hard kills at every step of the protocol
and at random, broker and database restarts, a provider that times out after placing a call or
storms 5xx and 429, duplicate Kafka messages and concurrent duplicate requests.

`make test` runs each scenario once; `make chaos` runs the kills three times (CHAOS_REPEAT=3)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.failpoints import ADDED, STARTING
from tests.chaos.invariants import check_invariants
from tests.e2e.conftest import ROOT, Base, Lane, ServiceProcess, open_lane
from tests.e2e.helpers import create_conferences
from tests.e2e.topics import read_topic
from tests.waiting import eventually

REPEAT = int(os.environ.get("CHAOS_REPEAT", "1"))
SCENARIO = {
    "auto_end_conference": False,
    "rules": [
        {"match": "1$", "status": "atendida", "ring_seconds": 4, "talk_seconds": 40},
        {"match": "2$", "status": "ocupado", "ring_seconds": 4},
        {"match": "3$", "status": "atendida", "ring_seconds": 4, "talk_seconds": 70},
    ],
}
_serial = iter(range(10**6))


def bodies(count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        n = next(_serial)
        out.append(
            {
                "participants": [
                    {"number": f"4837{n:05d}{1 + n % 3}"},
                    {"number": f"4838{n:05d}{1 + (n + 1) % 3}"},
                ]
            }
        )
    return out


@pytest.fixture
async def lane(base: Base) -> AsyncIterator[Lane]:
    chaos = await open_lane(base, time_scale=30, workers=0, DIAL_GRACE_SECONDS="2")
    async with chaos.simulator() as sim:
        assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
    yield chaos
    await chaos.close()


async def exited(process: subprocess.Popen[bytes], timeout: float) -> int:
    async def gone() -> bool:
        return process.poll() is not None

    await eventually(gone, timeout, "the process to exit")
    return process.returncode


async def test_hard_kill_at_every_failpoint(lane: Lane) -> None:
    accepted: list[str] = []
    async with lane.api() as api:
        for failpoint in sorted(STARTING):
            for _ in range(REPEAT):
                accepted += await create_conferences(api, bodies(3))
                worker = lane.start_worker(FAILPOINTS=failpoint)
                code = await exited(worker.process, 60)
                assert code == 137, f"{failpoint}: exit {code}\n{worker.log()[-2000:]}"
    lane.start_worker()
    await check_invariants(lane, accepted, f"failpoints x{REPEAT}")


# Long calls for the add scenario (simulated seconds, 30 a second): the conferences are still
# running when their adds arrive, several worker restarts later.
LONG_CALLS = {
    "rules": [
        {"match": "1$", "status": "atendida", "ring_seconds": 3, "talk_seconds": 1500},
        {"match": "7$", "status": "atendida", "ring_seconds": 3, "talk_seconds": 60},
    ]
}


async def _talking(api: httpx.AsyncClient, conference_ids: list[str]) -> bool:
    for conference_id in conference_ids:
        view = (await api.get(f"/v1/conferences/{conference_id}")).json()
        if view["status"] != "in_progress":
            return False
    return True


async def test_hard_kill_at_every_failpoint_of_an_add(lane: Lane) -> None:
    """For each step of the add path, three times with `make chaos`: conferences running under
    a healthy worker, that worker stopped, an add posted to each, then a worker that dies at the
    step. The usual invariants after, and every added number dialed once and billed."""
    accepted: list[str] = []
    added: dict[str, str] = {}
    async with lane.api() as api, lane.simulator() as sim:
        assert (await sim.put("/_simulator/scenario", json=LONG_CALLS)).status_code == 200
        for failpoint in sorted(ADDED):
            for _ in range(REPEAT):
                healthy = lane.start_worker()
                n = next(_serial)
                bodies = [{"participants": [{"number": f"4899{n:05d}{i}1"}]} for i in range(2)]
                running = await create_conferences(api, bodies)
                await eventually(
                    lambda running=running: _talking(api, running), 60, "the conferences to run"
                )
                assert healthy.stop() == 0
                for i, conference_id in enumerate(running):
                    joining = f"+55119{n:05d}{i}07"
                    answer = await api.post(
                        f"/v1/conferences/{conference_id}/participants",
                        headers={"Idempotency-Key": f"{failpoint}-{n}-{i}"},
                        json={"number": joining},
                    )
                    assert answer.status_code == 202, answer.text
                    added[joining] = conference_id
                accepted += running
                worker = lane.start_worker(FAILPOINTS=failpoint)
                code = await exited(worker.process, 60)
                assert code == 137, f"{failpoint}: exit {code}\n{worker.log()[-2000:]}"
    lane.start_worker()
    figures = await check_invariants(lane, accepted, f"add-participant failpoints x{REPEAT}")
    async with lane.simulator() as sim:
        provider = (await sim.get("/_simulator/ledger")).json()
    dialed = {d["number"]: d["count"] for d in provider["dials"] if d["number"] in added}
    assert dialed == dict.fromkeys(added, 1), dialed
    db = await lane.connect()
    try:
        billed = await db.fetch(
            "SELECT number FROM billing_conference_call WHERE number = ANY($1)", list(added)
        )
    finally:
        await db.close()
    assert sorted(r["number"] for r in billed) == sorted(added)
    print(
        f"chaos[add-participant failpoints x{REPEAT}] {len(added)} participants added "
        f"to {figures['accepted']} running conferences: each dialed once and billed"
    )


async def _placed_dials(sim: httpx.AsyncClient) -> int:
    return sum(int(d["count"]) for d in (await sim.get("/_simulator/ledger")).json()["dials"])


async def _kill_while_dialing(lane: Lane, worker: ServiceProcess, sim: httpx.AsyncClient) -> None:
    """Strike a ready worker at a random moment once its dials have started reaching the
    provider: with the provider slow to answer dials, others are then still in flight."""
    before = await _placed_dials(sim)

    async def dialing() -> bool:
        return await _placed_dials(sim) > before

    await eventually(dialing, 60, "the worker's dials to reach the provider")
    await asyncio.sleep(random.uniform(0, 0.6))  # a random moment to strike
    worker.process.kill()
    worker.process.wait()


async def test_hard_kill_at_random_times_under_load(lane: Lane) -> None:
    accepted: list[str] = []
    async with lane.api() as api, lane.simulator() as sim:
        slow_dials = {**SCENARIO, "latency_ms": {"POST /conferencia/{id}": 600}}
        assert (await sim.put("/_simulator/scenario", json=slow_dials)).status_code == 200
        for _ in range(3 * REPEAT):
            worker = lane.start_worker()
            await lane.ready(worker)
            accepted += await create_conferences(api, bodies(10))
            await _kill_while_dialing(lane, worker, sim)
    lane.start_worker()
    await check_invariants(lane, accepted, f"random kills x{3 * REPEAT}")


async def test_tight_budget_shared_by_workers_killed_while_dialing(base: Base) -> None:
    """Three workers share one request a second each (leases of 10 s) while one at a time is
    killed in the middle of its dials: nobody is dialed twice, everything ends final."""
    lane = await open_lane(
        base,
        time_scale=30,
        workers=0,
        TOTALVOICE_MAX_RPS="3",
        CLAIM_LEASE_SECONDS="10",
        DIAL_GRACE_SECONDS="2",
        TOTALVOICE_READ_TIMEOUT_SECONDS="2",
    )
    try:
        accepted: list[str] = []
        async with lane.api() as api, lane.simulator() as sim:
            slow_dials = {**SCENARIO, "latency_ms": {"POST /conferencia/{id}": 600}}
            assert (await sim.put("/_simulator/scenario", json=slow_dials)).status_code == 200
            workers = [lane.start_worker() for _ in range(3)]
            for worker in workers:
                await lane.ready(worker)
            for victim in range(REPEAT * 2):
                accepted += await create_conferences(api, bodies(8))
                await _kill_while_dialing(lane, workers[victim % 3], sim)
                workers[victim % 3] = lane.start_worker()
        figures = await check_invariants(
            lane, accepted, f"tight budget, 3 workers, kills x{2 * REPEAT}"
        )
        assert figures["dials"] == 2 * len(accepted)
    finally:
        await lane.close()


async def _load(api: httpx.AsyncClient, until: asyncio.Event) -> list[str]:
    """Create conferences until told to stop; only those answered 202 count as accepted."""
    accepted = []
    while not until.is_set():
        response = await api.post(
            "/v1/conferences", headers={"Idempotency-Key": str(uuid.uuid4())}, json=bodies(1)[0]
        )
        if response.status_code == 202:
            accepted.append(response.json()["id"])
        else:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
        await asyncio.sleep(0.05)
    return accepted


async def _restart(component: str) -> None:
    script = Path(ROOT) / "deploy" / "local" / f"{component}.sh"
    result = await asyncio.to_thread(
        subprocess.run, [str(script), "restart"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("component", ["kafka", "postgres"])
async def test_dependency_restart_under_load(lane: Lane, component: str) -> None:
    await lane.ready(lane.start_worker())
    stop = asyncio.Event()
    async with lane.api() as api:
        load = asyncio.create_task(_load(api, stop))
        await asyncio.sleep(2)
        await _restart(component)
        await asyncio.sleep(3)
        stop.set()
        accepted = await load
    assert accepted
    await check_invariants(lane, accepted, f"{component} restart")


@pytest.mark.parametrize(
    ("label", "fault", "worker_env", "answered"),
    [
        (
            "dial timeouts",
            {"dial_timeout_rate": 0.4, "dial_timeout_seconds": 3},
            {"TOTALVOICE_READ_TIMEOUT_SECONDS": "1"},
            "timed out",
        ),
        (
            "errors after placing",
            {"dial_errors_after_placing": {"500": 0.15, "502": 0.25}},
            {},
            "answered 5xx",
        ),
    ],
    ids=["timeout", "5xx"],
)
async def test_a_dial_placed_without_a_clear_answer_is_resolved_not_repeated(
    lane: Lane, label: str, fault: dict[str, Any], worker_env: dict[str, str], answered: str
) -> None:
    async with lane.simulator() as sim:
        scenario = {**SCENARIO, **fault}
        assert (await sim.put("/_simulator/scenario", json=scenario)).status_code == 200
    worker = lane.start_worker(**worker_env)
    async with lane.api() as api:
        accepted = await create_conferences(api, bodies(12))
    figures = await check_invariants(lane, accepted, label)
    assert figures["dials"] == 24, "every participant placed exactly once"
    unknown = worker.log().count('"dial_outcome_unknown"')
    resolved = worker.log().count('"dial_resolved_as_placed"')
    print(f"chaos[{label}]: {unknown} dials {answered}, {resolved} resolved as placed")
    assert unknown > 0 and resolved == unknown


async def test_provider_5xx_and_429_storms(lane: Lane) -> None:
    storm = {
        endpoint: {"500": 0.2, "502": 0.1, "429": 0.2}
        for endpoint in (
            "POST /conferencia",
            "POST /conferencia/{id}",
            "GET /conferencia/{id}",
            "DELETE /conferencia/{id}",
        )
    }
    async with lane.simulator() as sim:
        assert (
            await sim.put("/_simulator/scenario", json={**SCENARIO, "errors": storm})
        ).status_code == 200
        await lane.ready(lane.start_worker())
        async with lane.api() as api:
            accepted = await create_conferences(api, bodies(12))

        async def stormed() -> dict[str, int] | None:
            statuses = (await sim.get("/_simulator/ledger")).json()["requests"]
            faults = {
                code: sum(int(by_status.get(code, 0)) for by_status in statuses.values())
                for code in ("429", "500", "502")
            }
            return faults if all(faults.values()) else None

        # The storm lasts until the worker has met each kind of fault, then it clears.
        faults = await eventually(stormed, 60, "the worker to meet every kind of fault")
        assert (await sim.put("/_simulator/scenario", json=SCENARIO)).status_code == 200
    print(f"chaos[5xx/429 storm]: provider answered {faults}")
    assert all(faults.values())
    await check_invariants(lane, accepted, "5xx/429 storm")


async def test_duplicate_messages_and_concurrent_duplicate_requests(lane: Lane) -> None:
    lane.start_worker()
    body = bodies(1)[0]
    key = f"dup-{uuid.uuid4()}"
    async with lane.api() as api:
        responses = await asyncio.gather(
            *(
                api.post("/v1/conferences", headers={"Idempotency-Key": key}, json=body)
                for _ in range(20)
            )
        )
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["id"] for r in responses}) == 1
        accepted = [responses[0].json()["id"]]
        accepted += await create_conferences(api, bodies(5))

    commands = await read_topic(
        lane,
        lane.commands_topic,
        lambda seen: {v["conference_id"] for _, v in seen} >= set(accepted),
    )
    producer = AIOKafkaProducer(bootstrap_servers=lane.kafka)
    await producer.start()
    try:
        for key_bytes, value in commands:  # every command again, twice
            for _ in range(2):
                await producer.send_and_wait(
                    lane.commands_topic, orjson.dumps(value), key=key_bytes
                )
        await producer.send_and_wait(lane.commands_topic, b"not json at all", key=b"poison")
        await producer.send_and_wait(
            lane.commands_topic,
            orjson.dumps({**commands[0][1], "payload": {"participants": []}}),
            key=b"bad",
        )
    finally:
        await producer.stop()

    figures = await check_invariants(lane, accepted, "duplicates")
    assert figures["accepted"] == 6 and figures["dials"] == 12
    db = await lane.connect()
    try:
        assert await db.fetchval("SELECT count(*) FROM conference") == 6
    finally:
        await db.close()
    reasons = await dead_letters(lane)
    assert sorted(reasons) == [b"invalid-command", b"not-json"]


async def dead_letters(lane: Lane) -> list[bytes]:
    """The `dlq.reason` header of every message on the lane's DLQ, once there are two."""
    consumer = AIOKafkaConsumer(
        lane.dlq_topic,
        bootstrap_servers=lane.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    reasons: list[bytes] = []
    try:

        async def two() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                reasons.extend(dict(r.headers)["dlq.reason"] for r in records)
            return len(reasons) >= 2

        await eventually(two, 30, "two dead letters")
    finally:
        await consumer.stop()
    return reasons


async def test_sigterm_drains_the_api_and_the_worker(lane: Lane) -> None:
    worker = lane.start_worker()
    async with lane.api() as api:
        accepted = await create_conferences(api, bodies(6))
        [api_process] = [p for p in lane.processes if p.name == "api"]
        api_process.process.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return (await api.get("/readyz")).status_code == 503

        await eventually(draining, 5, "/readyz to turn 503 while the api drains")
        assert await exited(api_process.process, 30) == 0
    worker.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert await exited(worker.process, 30) == 0
    print(f"\nchaos[sigterm]: worker exited in {time.monotonic() - started:.1f}s")
    lane.start_worker()
    await check_invariants(lane, accepted, "sigterm")
