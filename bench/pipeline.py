"""Phase 2, pipeline: N conferences of 2 participants end to end through ONE worker process,
against the provider simulator at zero latency and a fast time scale.

The commands are pre-loaded: all N are POSTed to a real `api` (each answered 202, so each is on
the commands topic), the api is stopped, and only then is the worker started. What is measured
is therefore the worker draining a backlog — accept, create, dial, poll, finish, relay — not
the ingress. Figures:

- settled/s: N / (last finalized_at - first accepted_at), both stamped by Postgres in the
  worker's transactions (the worker's start-up and Kafka group join are excluded; the wall-clock
  figure including them is reported next to it);
- provider requests per conference: the simulator's /_simulator/ledger `requests` counts / N;
- accept -> final: finalized_at - accepted_at per conference (Postgres);
- 202 -> final event: the Kafka timestamp of the conference's final event on the events topic
  minus the moment the api answered 202 — this includes the time the command waited for the
  worker to be started, because of the pre-loading;
- 202 -> first dial: the `received_at` of the conference's first `POST /conferencia/{id}` in
  the simulator's request log minus the moment the api answered 202 — the same pre-load wait is
  in it (see first_dial_ms).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import profile
from bench.stack import Proc, Run, free_port, kafka_bootstrap, service_env, wait_http

BODY = {"participants": [{"number": "4832830151"}, {"number": "+5548999990000"}]}
FINAL_EVENTS = {
    "conference.completed",
    "conference.failed",
    "conference.canceled",
    "conference.unresolved",
}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms_percentiles(seconds: list[float]) -> dict[str, float | None]:
    def ms(q: float) -> float | None:
        value = percentile(seconds, q)
        return None if value is None else round(value * 1000, 1)

    return {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0)}


# The simulator keeps its latest 10,000 requests (service/simulator/journal.py, keep_latest; no
# CLI flag changes it): 202 -> first dial is measured on the conferences whose dials are in it.
JOURNAL_KEEP = 10_000
DIAL_ENDPOINT = "POST /conferencia/{id}"

# One anchor per process: a 202 moment is taken on the monotonic clock and turned into wall time
# from here, so that a wall-clock step during a run cannot bend the client-side figures.
_WALL_ANCHOR, _MONO_ANCHOR = time.time(), time.monotonic()


def wall_now() -> float:
    """Epoch seconds, read from the monotonic clock (see _WALL_ANCHOR)."""
    return _WALL_ANCHOR + (time.monotonic() - _MONO_ANCHOR)


async def first_dial_ms(
    sim_url: str, database_url: str, answered: dict[str, float]
) -> dict[str, Any]:
    """202 -> first dial per conference: from the moment the api answered 202 (epoch seconds, by
    service conference id) to the `received_at` of the conference's first
    `POST /conferencia/{provider_id}` in the simulator's request log, the provider id read from
    Postgres (`conference.provider_conference_id`). Percentiles in ms, and how many conferences
    they cover (fewer than all when the log had rolled past their dials)."""
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as client:
        response = await client.get("/_simulator/requests", params={"limit": JOURNAL_KEEP})
        response.raise_for_status()
        logged = response.json()
    first: dict[str, float] = {}
    for entry in logged:
        if entry["endpoint"] != DIAL_ENDPOINT or entry["conference_id"] is None:
            continue
        at = datetime.fromisoformat(entry["received_at"]).timestamp()
        key = str(entry["conference_id"])
        if key not in first or at < first[key]:
            first[key] = at
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT id::text, provider_conference_id FROM conference WHERE id = ANY($1)",
            [uuid.UUID(i) for i in answered],
        )
    finally:
        await connection.close()
    delays = [
        first[r["provider_conference_id"]] - answered[r["id"]]
        for r in rows
        if r["provider_conference_id"] in first
    ]
    return {
        **ms_percentiles(delays),
        "measured": len(delays),
        "conferences": len(answered),
        "requests_logged": len(logged),
        "log_full": len(logged) >= JOURNAL_KEEP,
    }


PRELOAD_CALLERS = 24


def preload_tokens() -> str:
    """API_TOKENS for the pre-loading api: several callers, so that the api's per-caller
    admission budgets (requests/s, participants/minute) never slow the pre-loading down."""
    return ",".join(f"bench{i:02d}:bench-token-{i:02d}" for i in range(PRELOAD_CALLERS))


async def preload(api_url: str, count: int, tag: str, timeout: float = 120) -> dict[str, float]:
    """POST `count` conferences, spread over the callers; the 202 moment (epoch seconds) by
    conference id. A 429 is retried after its Retry-After, until `timeout`."""
    answered: dict[str, float] = {}
    gate = asyncio.Semaphore(32)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=api_url, timeout=30, limits=limits) as client:

        async def create(i: int) -> None:
            caller = i % PRELOAD_CALLERS
            while True:
                async with gate:
                    response = await client.post(
                        "/v1/conferences",
                        json={**BODY, "reference": f"{tag}-{i}"},
                        headers={
                            "Authorization": f"Bearer bench-token-{caller:02d}",
                            "Idempotency-Key": f"{tag}-{i}",
                        },
                    )
                if response.status_code == 202:
                    answered[str(response.json()["id"])] = wall_now()
                    return
                if response.status_code != 429 or time.monotonic() > deadline:
                    raise RuntimeError(f"preload got {response.status_code}: {response.text[:300]}")
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))

        await asyncio.gather(*(create(i) for i in range(count)))
    return answered


async def final_event_times(topic: str, ids: set[str], timeout: float) -> dict[str, float]:
    """The Kafka timestamp (epoch seconds) of each conference's final event on `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap(), enable_auto_commit=False)
    await consumer.start()
    found: dict[str, float] = {}
    try:
        partitions: list[TopicPartition] = []
        deadline = time.monotonic() + timeout
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while len(found) < len(ids) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event.get("type") in FINAL_EVENTS and event["conference_id"] in ids:
                        found.setdefault(event["conference_id"], record.timestamp / 1000)
    finally:
        await consumer.stop()
    return found


async def wait_settled(
    database_url: str, ids: list[uuid.UUID], timeout: float, worker: Proc
) -> float | None:
    """Until every conference has its final state; the moment (epoch) that was seen, or None."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = await connection.fetchval(
                "SELECT count(*) FROM conference WHERE id = ANY($1) AND finalized_at IS NOT NULL",
                ids,
            )
            if done == len(ids):
                return time.time()
            if not worker.alive():
                raise RuntimeError(f"the worker exited: see {worker.log_path}")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
    return None


async def wait_logged(proc: Proc, marker: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in proc.log_path.read_bytes():
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited: see {proc.log_path}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not log {marker!r} within {timeout}s")


async def pipeline_pass(
    run: Run,
    database_url: str,
    sim_url: str,
    sim: Proc,
    lane: str,
    count: int,
    cfg: dict[str, Any],
    profiled: bool,
) -> dict[str, Any]:
    """One pass: its own topics and consumer group; profiled with py-spy when asked."""
    scale = cfg["time_scale"]
    topics = await run.fresh_topics(lane)
    env = service_env(
        database_url,
        topics,
        TOTALVOICE_BASE_URL=sim_url,
        TOTALVOICE_MAX_RPS=str(cfg["max_rps"]),
        # Production timings divided by the simulator's time scale, as tests/e2e does.
        POLL_FIRST_SECONDS=str(5 / scale),
        POLL_MAX_SECONDS=str(60 / scale),
        POLL_SAFETY_SECONDS=str(120 / scale),
        DIAL_GRACE_SECONDS="3",
    )
    api_port = free_port()
    api = run.start_service(
        f"api-{lane}", ["api", "--port", str(api_port)], {**env, "API_TOKENS": preload_tokens()}
    )
    await wait_http(f"http://127.0.0.1:{api_port}/readyz", 60, api)
    async with httpx.AsyncClient(base_url=sim_url, timeout=10) as client:
        (await client.post("/_simulator/reset")).raise_for_status()
    answered = await preload(f"http://127.0.0.1:{api_port}", count, f"{run.run_id}-{lane}")
    run.stop(api)

    ids = [uuid.UUID(i) for i in answered]
    sim_cpu_before = sim.cpu_seconds()
    started = time.time()
    # The worker accepts commands only for the api's callers: the same list as the api's.
    worker = run.start_service(
        f"worker-{lane}", ["worker"], {**env, "API_TOKENS": preload_tokens()}
    )
    # CPU and samples from the moment it runs, not while it imports.
    await wait_logged(worker, b"worker_started", 60)
    cpu_at_start, running = worker.cpu_seconds(), time.time()
    prof = None
    if profiled:
        prof = profile.start(run, f"worker-{lane}", worker.pid, cfg["timeout_seconds"])
    peak_rss = 0
    settled_seen = None
    try:
        waiter = asyncio.ensure_future(
            wait_settled(database_url, ids, cfg["timeout_seconds"], worker)
        )
        while not waiter.done():
            peak_rss = max(peak_rss, worker.rss_bytes()[0])
            await asyncio.sleep(0.25)
        settled_seen = waiter.result()
        worker_cpu = worker.cpu_seconds() - cpu_at_start
        sim_cpu = sim.cpu_seconds() - sim_cpu_before
    finally:
        if prof is not None:
            prof.finish()
    finals = await final_event_times(topics["events"], set(answered), 60)
    run.stop(worker)
    first_dial = await first_dial_ms(sim_url, database_url, answered)

    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as client:
        ledger = (await client.get("/_simulator/ledger")).json()
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            """
            SELECT id::text, status, accepted_at, finalized_at, poll_count FROM conference
             WHERE id = ANY($1)
            """,
            ids,
        )
    finally:
        await connection.close()

    requests_by_endpoint = {
        endpoint: sum(counts.values()) for endpoint, counts in ledger["requests"].items()
    }
    provider_requests = sum(requests_by_endpoint.values())
    # Every dial should find its room open: a refusal means the run was not the scenario.
    provider_refusals = sum(
        n
        for counts in ledger["requests"].values()
        for status, n in counts.items()
        if not status.startswith("2")
    )
    accepted = [r["accepted_at"].timestamp() for r in rows]
    finalized = [r["finalized_at"].timestamp() for r in rows if r["finalized_at"] is not None]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    span = (max(finalized) - min(accepted)) if finalized and accepted else None
    result: dict[str, Any] = {
        "conferences": count,
        "settled": len(finalized),
        "statuses": statuses,
        "settled_per_s": round(len(finalized) / span, 1) if span else None,
        "settled_per_s_wall": round(len(finalized) / (settled_seen - started), 1)
        if settled_seen
        else None,
        "span_s": round(span, 2) if span else None,
        "provider_requests": provider_requests,
        "provider_requests_per_conference": round(provider_requests / count, 2),
        "provider_requests_by_endpoint_per_conference": {
            k: round(v / count, 2) for k, v in sorted(requests_by_endpoint.items())
        },
        "provider_statuses": ledger["requests"],
        "provider_refusals": provider_refusals,
        "polls_per_conference": round(sum(r["poll_count"] for r in rows) / max(len(rows), 1), 2),
        "accept_to_final_ms": ms_percentiles(
            [
                (r["finalized_at"] - r["accepted_at"]).total_seconds()
                for r in rows
                if r["finalized_at"] is not None
            ]
        ),
        "final_events_seen": len(finals),
        "answer_202_to_final_event_ms": ms_percentiles([finals[i] - answered[i] for i in finals]),
        "worker_start_to_final_event_ms": ms_percentiles([finals[i] - started for i in finals]),
        # Pre-loaded: the wait for the worker's start is in it, as in 202 -> final event.
        "answer_202_to_first_dial_ms": first_dial,
        "worker_cpu_s": round(worker_cpu, 2),  # after its start-up (imports, connections)
        "worker_cpu_ms_per_conference": round(worker_cpu * 1000 / count, 2),
        "worker_cpu_share": round(worker_cpu / (settled_seen - running), 2)
        if settled_seen
        else None,
        "simulator_cpu_s": round(sim_cpu, 2),
        "worker_peak_rss_mb": round(peak_rss / 2**20, 1),
    }
    if prof is not None:
        result["profile"] = {"svg": prof.svg.name, **profile.top_entries(prof.raw)}
    return result


async def run_pipeline(run: Run, cfg: dict[str, Any], sim: Proc, sim_url: str) -> dict[str, Any]:
    database_url = await run.fresh_database("pipeline")
    print(f"bench: pipeline {cfg['conferences']} conferences, one worker", flush=True)
    measured = await pipeline_pass(
        run, database_url, sim_url, sim, "pipe", cfg["conferences"], cfg, False
    )
    print("bench: pipeline profile pass", flush=True)
    profiled = await pipeline_pass(
        run, database_url, sim_url, sim, "pipeprof", cfg["profile_conferences"], cfg, True
    )
    return {
        "settings": {
            "conferences": cfg["conferences"],
            "participants": 2,
            "time_scale": cfg["time_scale"],
            "scenario": "bench/scenario.json (answered, ring 2 s, talk 5 s simulated; latency 0)",
            "worker_env": f"TOTALVOICE_MAX_RPS={cfg['max_rps']}, POLL_FIRST_SECONDS=5/scale, "
            "POLL_MAX_SECONDS=60/scale, CLAIM_BATCH=50, DATABASE_POOL_MAX=10 (defaults)",
            "preloaded": True,
        },
        "measured": measured,
        "profiled": {
            "settled_per_s": profiled["settled_per_s"],
            "conferences": profiled["conferences"],
            "profile": profiled.get("profile"),
        },
    }
