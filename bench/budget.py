"""Phase "pipeline under a provider budget": a burst of conferences fed to RUNNING workers that
share TOTALVOICE_MAX_RPS (paced: service/adapters/provider_budget.py), once with 1 worker and
once with 3, each configuration in its own database, topics, simulator and api.

Unlike the pipeline phase there is no backlog: the api, the workers and the simulator are up,
every worker has logged `provider_budget_shared` with the configuration's worker count (its
share is final), and only then is the burst POSTed. Figures per configuration:

- settled/s: N / (last finalized_at (Postgres) - first 202 (client));
- ideal settled/s: the budget's rate / (provider requests per conference), the requests counted
  from the simulator's /_simulator/ledger (the bench's own webhook registrations excluded): the
  rate at which the budget could serve the very requests the run needed;
- ratio = settled/s / ideal (target >= 0.9);
- dial resolutions per participant: `dial_resolved_as_placed` / `dial_resolved_as_not_placed`
  in the worker logs, checked against `conference_dial_resolutions_total` on each worker's
  METRICS_PORT;
- 202 -> first dial: the moment the api answered 202 to the `received_at` of the conference's
  first `POST /conferencia/{id}` in the simulator's request log (live: no pre-load wait in it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from bench.pipeline import first_dial_ms, ms_percentiles, wait_logged, wall_now
from bench.stack import (
    API_TOKEN,
    BENCH,
    SIM_TOKEN,
    WEBHOOK_SECRET,
    Proc,
    Run,
    free_port,
    service_env,
    start_simulator,
    wait_http,
)

FINAL = ("completed", "failed", "canceled", "unresolved")
RESOLUTION = re.compile(rb'"(dial_resolved_as_(?:placed|not_placed))"')
METRIC = re.compile(r'^conference_dial_resolutions_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


def burst_bodies(count: int, run_id: str) -> list[dict[str, Any]]:
    """1, 2 and 3 participants in turn; every number distinct across the burst."""
    return [
        {
            "participants": [{"number": f"48{3 + j}{i:07d}"} for j in range(1 + i % 3)],
            "reference": f"{run_id}-budget-{i}",
        }
        for i in range(count)
    ]


def shares_logged(log: bytes) -> set[int]:
    """The worker counts this worker's log says it shared the budget between."""
    return {
        json.loads(line)["workers"]
        for line in log.splitlines()
        if b'"provider_budget_shared"' in line
    }


async def wait_shares(workers: list[Proc], count: int, timeout: float) -> float:
    """Until every worker has logged `provider_budget_shared` with `count` workers; seconds."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if all(count in shares_logged(w.log_path.read_bytes()) for w in workers):
            return time.monotonic() - started
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"{w.name} exited: see {w.log_path}")
        if time.monotonic() > deadline:
            seen = {w.name: sorted(shares_logged(w.log_path.read_bytes())) for w in workers}
            raise TimeoutError(f"the workers did not all share by {count} in {timeout}s: {seen}")
        await asyncio.sleep(0.1)


async def post_burst(api_url: str, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """POST every body at once (32 in flight); the 202 moment (epoch) by conference id."""
    answered: dict[str, float] = {}
    gate = asyncio.Semaphore(32)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=30, limits=limits) as client:

        async def create(body: dict[str, Any]) -> None:
            async with gate:
                response = await client.post(
                    "/v1/conferences",
                    json=body,
                    headers={**headers, "Idempotency-Key": body["reference"]},
                )
            if response.status_code != 202:
                raise RuntimeError(f"burst got {response.status_code}: {response.text[:300]}")
            answered[str(response.json()["id"])] = wall_now()

        await asyncio.gather(*(create(b) for b in bodies))
    return answered


async def wait_final(
    database_url: str, ids: list[uuid.UUID], timeout: float, procs: list[Proc]
) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = await connection.fetchval(
                "SELECT count(*) FROM conference WHERE id = ANY($1) AND status = ANY($2)",
                ids,
                FINAL,
            )
            if done == len(ids):
                return True
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited: see {proc.log_path}")
            await asyncio.sleep(0.25)
    finally:
        await connection.close()
    return False


async def scrape_resolutions(port: int) -> dict[str, float] | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return None
    return {outcome: float(value) for outcome, value in METRIC.findall(text)}


def log_problems(log: bytes) -> Counter[str]:
    """Warning and error lines of a worker's log, by event (non-JSON lines as 'unparsed')."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            found["unparsed: " + line[:80].decode(errors="replace")] += 1
            continue
        level = str(entry.get("level", "")).lower()
        if level in {"warning", "error", "critical", "exception"}:
            found[f"{level} {entry.get('event')}"] += 1
    return found


def peak_per_second(
    logged: list[dict[str, Any]], endpoints: set[str], rate: float
) -> dict[str, int]:
    """The most provider requests received in one calendar second, and in any one-second
    window (sliding: a stricter count than a provider's per-second one); how many calendar
    seconds received more than `rate`."""
    moments = sorted(
        datetime.fromisoformat(e["received_at"]).timestamp()
        for e in logged
        if e["endpoint"] in endpoints
    )
    sliding, start = 0, 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= 1.0:
            start += 1
        sliding = max(sliding, end - start + 1)
    by_second = Counter(int(moment) for moment in moments)
    return {
        "calendar_second": max(by_second.values(), default=0),
        "sliding_1s": sliding,
        "calendar_seconds_over_rate": sum(1 for n in by_second.values() if n > rate),
        "calendar_seconds": len(by_second),
    }


async def budget_pass(run: Run, cfg: dict[str, Any], workers: int) -> dict[str, Any]:
    lane = f"budget{workers}w"
    scale = cfg["time_scale"]
    rate = cfg["max_rps"]
    sim, sim_url = start_simulator(run, f"simulator-{lane}", BENCH / "scenario-budget.json", scale)
    database_url = await run.fresh_database(lane)
    topics = await run.fresh_topics(lane)
    await wait_http(f"{sim_url}/_simulator/health", 30, sim)
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = service_env(
        database_url,
        topics,
        TOTALVOICE_BASE_URL=sim_url,
        TOTALVOICE_MAX_RPS=str(rate),
        POLL_FIRST_SECONDS=str(5 / scale),
        POLL_MAX_SECONDS=str(60 / scale),
        POLL_SAFETY_SECONDS=str(120 / scale),
        DIAL_GRACE_SECONDS="3",
        CLAIM_LEASE_SECONDS=str(cfg["lease_seconds"]),
        WEBHOOKS_ENABLED="true",
        KAFKA_SESSION_TIMEOUT_MS="6000",
    )
    api = run.start_service(f"api-{lane}", ["api", "--port", str(api_port)], env)
    procs: list[Proc] = [sim, api]
    ports = [free_port() for _ in range(workers)]
    worker_procs = [
        run.start_service(f"worker-{lane}-{i}", ["worker"], {**env, "METRICS_PORT": str(port)})
        for i, port in enumerate(ports)
    ]
    procs += worker_procs
    await wait_http(f"{api_url}/readyz", 60, api)
    async with httpx.AsyncClient(
        base_url=sim_url, headers={"Access-Token": SIM_TOKEN}, timeout=10
    ) as client:
        for name in ("chamada_fim", "conferencia"):
            hook = f"{api_url}/v1/webhooks/totalvoice/{WEBHOOK_SECRET}"
            (await client.put(f"/webhook/{name}", json={"url": hook})).raise_for_status()
    for w in worker_procs:
        await wait_logged(w, b'"worker_started"', 60)
    share_wait = await wait_shares(worker_procs, workers, 60)

    bodies = burst_bodies(cfg["conferences"], f"{run.run_id}-{lane}")
    participants = sum(len(b["participants"]) for b in bodies)
    print(
        f"bench: budget {rate}/s over {workers} worker(s): burst of {len(bodies)} conferences "
        f"({participants} participants)",
        flush=True,
    )
    cpu_before = [w.cpu_seconds() for w in worker_procs]
    answered = await post_burst(api_url, bodies)
    ids = [uuid.UUID(i) for i in answered]
    # Twice a generous ideal (six requests a conference): a stall fails instead of hanging.
    timeout = 2 * len(bodies) * 6 / rate + 30
    all_final = await wait_final(database_url, ids, timeout, procs)
    worker_cpu = sum(w.cpu_seconds() - c for w, c in zip(worker_procs, cpu_before, strict=True))
    metrics = [await scrape_resolutions(port) for port in ports]

    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as client:
        ledger = (await client.get("/_simulator/ledger")).json()
        logged = (await client.get("/_simulator/requests", params={"limit": 10_000})).json()
    first_dial = await first_dial_ms(sim_url, database_url, answered)
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT status, accepted_at, finalized_at FROM conference WHERE id = ANY($1)", ids
        )
    finally:
        await connection.close()
    for w in reversed(worker_procs):
        run.stop(w)
    run.stop(api)
    run.stop(sim)

    # The conference's own requests: not the bench's webhook registrations, nor anything the
    # simulator could not route.
    conference_requests = {
        endpoint: sum(counts.values())
        for endpoint, counts in ledger["requests"].items()
        if "/webhook" not in endpoint and endpoint != "unmatched"
    }
    requests = sum(conference_requests.values())
    refusals = sum(
        n
        for endpoint, counts in ledger["requests"].items()
        if endpoint in conference_requests
        for status, n in counts.items()
        if not status.startswith("2")
    )
    logs = [w.log_path.read_bytes() for w in worker_procs]
    resolutions: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for log in logs:
        resolutions.update(m.decode() for m in RESOLUTION.findall(log))
        problems.update(log_problems(log))
    metric_total: float | None = None
    if all(m is not None for m in metrics):
        metric_total = sum(sum(m.values()) for m in metrics if m is not None)
    dials = [d["count"] for d in ledger["dials"]]
    statuses = Counter(r["status"] for r in rows)
    finalized = [r["finalized_at"].timestamp() for r in rows if r["finalized_at"] is not None]
    first_202 = min(answered.values())
    span = (max(finalized) - first_202) if finalized else None
    settled_per_s = len(finalized) / span if span else None
    per_conference = requests / len(bodies)
    ideal = rate / per_conference if per_conference else None
    resolved = sum(resolutions.values())
    return {
        "workers": workers,
        "conferences": len(bodies),
        "participants": participants,
        "all_final": all_final,
        "statuses": dict(statuses),
        "share_wait_s": round(share_wait, 2),
        "span_s": round(span, 2) if span else None,
        "settled_per_s": round(settled_per_s, 3) if settled_per_s else None,
        "ideal_settled_per_s": round(ideal, 3) if ideal else None,
        "ratio_to_ideal": round(settled_per_s / ideal, 3) if settled_per_s and ideal else None,
        "provider_requests": requests,
        "provider_requests_per_conference": round(per_conference, 2),
        "provider_requests_by_endpoint_per_conference": {
            k: round(v / len(bodies), 2) for k, v in sorted(conference_requests.items())
        },
        "provider_statuses": ledger["requests"],
        "provider_refusals": refusals,
        "provider_peak_requests_in_1s": peak_per_second(logged, set(conference_requests), rate),
        "dials_per_participant_max": max(dials) if dials else None,
        "participants_dialed": len(dials),
        "dial_resolutions": dict(resolutions),
        "dial_resolutions_per_participant": round(resolved / participants, 3),
        "dial_resolutions_metric": metric_total,
        "worker_log_problems": dict(problems.most_common(10)),
        "accept_to_final_ms": ms_percentiles(
            [
                (r["finalized_at"] - r["accepted_at"]).total_seconds()
                for r in rows
                if r["finalized_at"] is not None
            ]
        ),
        "answer_202_to_first_dial_ms": first_dial,
        "worker_cpu_s": round(worker_cpu, 2),
    }


async def run_budget(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    passes = {}
    for workers in cfg["workers"]:
        passes[f"{workers}w"] = await budget_pass(run, cfg, workers)
    return {
        "settings": {
            "max_rps": cfg["max_rps"],
            "conferences": cfg["conferences"],
            "participants": "1, 2, 3 in turn",
            "time_scale": cfg["time_scale"],
            "scenario": "bench/scenario-budget.json (answered, ring 2 s, talk 5 s simulated; "
            "latency 0; webhooks on, registered to the api; auto_end_conference false)",
            "worker_env": f"TOTALVOICE_MAX_RPS={cfg['max_rps']} (shared), WEBHOOKS_ENABLED=true, "
            f"CLAIM_LEASE_SECONDS={cfg['lease_seconds']}, POLL_*=production/scale",
            "preloaded": False,
        },
        "passes": passes,
    }
