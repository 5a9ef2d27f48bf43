"""Phase "ring": how soon the phone rings under a provider budget (issue 16). ONE worker with
TOTALVOICE_MAX_RPS=20 against the simulator, fed an OPEN loop of conferences of 2 participants
at 50 % and at 90 % of the conference capacity of that budget, once with the urgency order
(TOTALVOICE_BUDGET_ORDER=urgency, the default: dials first, then creates, ends, polls) and once
with the first-come queue (TOTALVOICE_BUDGET_ORDER=fifo: the baseline), all four in one run.

Polling is production's default: WEBHOOKS_ENABLED=false, so polls are the traffic a dial
competes with. Time scale 10, and every worker timing is the production one / 10
(POLL_FIRST 0.5 s, POLL_MAX 6 s, CLAIM_LEASE 6 s): a conference lives ~8 s instead of ~80 s, so
the load reaches its steady state (as many conferences finishing as starting) within a pass,
while a poll interval stays 10-120 times the budget's 50 ms spacing, as in production, where
it is 100-1200 times. The scenario (bench/scenario-ring.json) makes the request count of a
conference exact (see REQUESTS_PER_CONFERENCE), so the capacity is computed, not guessed; each
pass's ledger checks it.

Each pass has its own simulator, database, topics, api and worker. Once the worker has logged
`provider_budget_shared` (workers=1), conferences are POSTed at a fixed rate whatever the
answers (request i is scheduled at start + i / rate, each its own task), the 202 moment taken
client side; the first `warmup_seconds` of conferences are not measured (the schedule fills up
with polls meanwhile). Figures per pass, on the measured conferences:

- 202 -> first dial: the 202 to the `received_at` of the conference's first
  `POST /conferencia/{id}` in the simulator's /_simulator/requests log (bench.pipeline);
- polls per conference: `conference.poll_count` (Postgres), and GETs from the ledger;
- 202 -> final: the 202 to `conference.finalized_at` (Postgres, same host); accept -> final
  as well;
- the budget's queue: `conference_provider_budget_wait_seconds` and
  `conference_provider_budget_refused_total` scraped from the worker's METRICS_PORT at the
  start and the end of the measured window; `provider_budget_exhausted` lines in its log.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from bench.budget import log_problems, peak_per_second, wait_final, wait_shares
from bench.pipeline import DIAL_ENDPOINT, first_dial_ms, ms_percentiles, wait_logged, wall_now
from bench.stack import (
    API_TOKEN,
    BENCH,
    Proc,
    Run,
    free_port,
    service_env,
    start_simulator,
    wait_http,
)

SCENARIO = BENCH / "scenario-ring.json"
PARTICIPANTS = 2
# bench/scenario-ring.json, at any time scale (seconds simulated; worker timings = production /
# scale): a call is answered and ends 1 + 2 + 47 = 50 s after its dial. Polls come due
# 5, 10, 20, 40 s (each ±20 %) after the previous one, the first 5 s after the dials: the
# third poll is at most 6 + 12 + 24 = 42 s after them, the fourth at least 4 + 8 + 16 + 32 =
# 60 s, so the fourth (and never an earlier one) finds both calls over, and the room, still
# open (auto_end_conference false), is ended with a DELETE.
REQUESTS_PER_CONFERENCE = {
    "POST /conferencia": 1,
    "POST /conferencia/{id}": PARTICIPANTS,
    "GET /conferencia/{id}": 4,
    "DELETE /conferencia/{id}": 1,
}
ORDERS = ("urgency", "fifo")
BASELINE = "fifo"
WAIT_BUCKET = re.compile(
    r'^conference_provider_budget_wait_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M
)
WAIT_SUM = re.compile(r"^conference_provider_budget_wait_seconds_(sum|count) ([0-9.e+]+)$", re.M)
REFUSED = re.compile(r"^conference_provider_budget_refused_total ([0-9.e+]+)$", re.M)


def capacity(rate: float) -> float:
    """Conferences a second the budget can serve: its rate / provider requests per conference."""
    return rate / sum(REQUESTS_PER_CONFERENCE.values())


def ring_body(i: int, tag: str) -> dict[str, Any]:
    """Two participants; every number distinct across the pass."""
    return {
        "participants": [{"number": f"48{3 + j}{i:07d}"} for j in range(PARTICIPANTS)],
        "reference": f"{tag}-{i}",
    }


async def open_loop(
    api_url: str, rate: float, seconds: float, tag: str
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """POST conference i at start + i / rate for `seconds`, whatever the earlier answers:
    (202 moment by conference id, scheduled moment by id, generator figures). The moments are
    epoch seconds (bench.pipeline.wall_now)."""
    count = round(rate * seconds)
    answered: dict[str, float] = {}
    scheduled_at: dict[str, float] = {}
    lags: list[float] = []
    statuses: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=api_url, timeout=30, limits=limits) as client:

        async def create(i: int, at: float) -> None:
            lags.append(time.monotonic() - at)
            body = ring_body(i, tag)
            response = await client.post(
                "/v1/conferences",
                json=body,
                headers={**headers, "Idempotency-Key": body["reference"]},
            )
            statuses[str(response.status_code)] += 1
            if response.status_code == 202:
                key = str(response.json()["id"])
                answered[key] = wall_now()
                scheduled_at[key] = wall_now() - (time.monotonic() - at)

        start = time.monotonic() + 0.05
        tasks = []
        for i in range(count):
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.ensure_future(create(i, at)))
        await asyncio.gather(*tasks)
    lags_ms = ms_percentiles(lags)
    return answered, scheduled_at, {"statuses": dict(statuses), "send_lag_ms": lags_ms}


async def scrape_budget(port: int) -> dict[str, Any] | None:
    """The worker's budget-queue metrics: wait histogram (cumulative buckets), sum, count, and
    the refused total."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return None
    sums = {name: float(value) for name, value in WAIT_SUM.findall(text)}
    refused = REFUSED.findall(text)
    return {
        "buckets": {le: float(n) for le, n in WAIT_BUCKET.findall(text)},
        "sum": sums.get("sum", 0.0),
        "count": sums.get("count", 0.0),
        "refused": float(refused[0]) if refused else 0.0,
    }


def budget_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """What the budget's queue did between two scrapes: bookings, their mean wait, the share
    that waited more than 0.1 / 0.25 / 1 s, and the requests put off (refused bookings)."""
    if before is None or after is None:
        return {}
    count = float(after["count"]) - float(before["count"])

    def over(le: str) -> float | None:
        if not count or le not in after["buckets"]:
            return None
        within = float(after["buckets"][le]) - float(before["buckets"].get(le, 0.0))
        return round(1 - within / count, 3)

    return {
        "bookings": int(count),
        "mean_wait_ms": round((after["sum"] - before["sum"]) * 1000 / count, 1) if count else None,
        "share_over_100ms": over("0.1"),
        "share_over_250ms": over("0.25"),
        "share_over_1s": over("1.0"),
        "refused": int(after["refused"] - before["refused"]),
    }


async def ring_pass(run: Run, cfg: dict[str, Any], order: str, load: float) -> dict[str, Any]:
    pct = round(load * 100)
    lane = f"ring{pct}{order}"
    scale = cfg["time_scale"]
    rate = cfg["max_rps"]
    offered = load * capacity(rate)
    sim, sim_url = start_simulator(run, f"simulator-{lane}", SCENARIO, scale)
    database_url = await run.fresh_database(lane)
    topics = await run.fresh_topics(lane)
    await wait_http(f"{sim_url}/_simulator/health", 30, sim)
    api_port, metrics_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = service_env(
        database_url,
        topics,
        TOTALVOICE_BASE_URL=sim_url,
        TOTALVOICE_MAX_RPS=str(rate),
        TOTALVOICE_BUDGET_ORDER=order,
        WEBHOOKS_ENABLED="false",
        POLL_FIRST_SECONDS=str(5 / scale),
        POLL_MAX_SECONDS=str(60 / scale),
        POLL_SAFETY_SECONDS=str(120 / scale),
        CLAIM_LEASE_SECONDS=str(60 / scale),
        DIAL_GRACE_SECONDS="3",
        KAFKA_SESSION_TIMEOUT_MS="6000",
    )
    api = run.start_service(f"api-{lane}", ["api", "--port", str(api_port)], env)
    worker = run.start_service(
        f"worker-{lane}", ["worker"], {**env, "METRICS_PORT": str(metrics_port)}
    )
    procs: list[Proc] = [sim, api, worker]
    await wait_http(f"{api_url}/readyz", 60, api)
    await wait_logged(worker, b'"worker_started"', 60)
    await wait_shares([worker], 1, 60)

    seconds = cfg["warmup_seconds"] + cfg["seconds"]
    print(
        f"bench: ring {order} at {pct} % of {capacity(rate):.2f} conferences/s: "
        f"{offered:.3f}/s for {seconds} s (the first {cfg['warmup_seconds']} s not measured)",
        flush=True,
    )
    loop = asyncio.ensure_future(open_loop(api_url, offered, seconds, f"{run.run_id}-{lane}"))
    # The budget's queue over the measured window: from the end of the warm-up to the last POST.
    await asyncio.sleep(cfg["warmup_seconds"])
    metrics_before = await scrape_budget(metrics_port)
    cpu_before = worker.cpu_seconds()
    answered_all, scheduled_all, generator = await loop
    metrics_after = await scrape_budget(metrics_port)
    measure_from = min(scheduled_all.values(), default=0.0) + cfg["warmup_seconds"]
    answered = {k: v for k, v in answered_all.items() if scheduled_all[k] >= measure_from - 0.01}
    all_ids = [uuid.UUID(i) for i in answered_all]
    all_final = await wait_final(database_url, all_ids, cfg["drain_seconds"], procs)
    worker_cpu = worker.cpu_seconds() - cpu_before

    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as client:
        ledger = (await client.get("/_simulator/ledger")).json()
        logged = (await client.get("/_simulator/requests", params={"limit": 10_000})).json()
    first_dial = await first_dial_ms(sim_url, database_url, answered)
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT id::text, status, accepted_at, finalized_at, poll_count,"
            " provider_conference_id FROM conference"
            " WHERE id = ANY($1)",
            [uuid.UUID(i) for i in answered],
        )
    finally:
        await connection.close()
    run.stop(worker)
    run.stop(api)
    run.stop(sim)

    log = worker.log_path.read_bytes()
    conference_requests = {
        endpoint: sum(counts.values())
        for endpoint, counts in ledger["requests"].items()
        if "/webhook" not in endpoint and endpoint != "unmatched"
    }
    refusals = sum(
        n
        for endpoint, counts in ledger["requests"].items()
        if endpoint in conference_requests
        for status, n in counts.items()
        if not status.startswith("2")
    )
    posted = len(answered_all)
    finished = [r for r in rows if r["finalized_at"] is not None]
    dials = [d["count"] for d in ledger["dials"]]
    # Where the wait before the first dial is: the command reaching the worker (202 -> its
    # accept, Postgres' accepted_at) or the dialer and the budget (accept -> first dial).
    first_at: dict[str, float] = {}
    for entry in logged:
        if entry["endpoint"] == DIAL_ENDPOINT and entry["conference_id"] is not None:
            at = datetime.fromisoformat(entry["received_at"]).timestamp()
            key = str(entry["conference_id"])
            first_at[key] = min(at, first_at.get(key, at))
    dialed = [r for r in rows if r["provider_conference_id"] in first_at]
    return {
        "order": order,
        "load": load,
        "offered_per_s": round(offered, 3),
        "posted": posted,
        "measured": len(answered),
        "generator": generator,
        "all_final": all_final,
        "statuses": dict(Counter(r["status"] for r in rows)),
        "answer_202_to_first_dial_ms": first_dial,
        "answer_202_to_accept_ms": ms_percentiles(
            [r["accepted_at"].timestamp() - answered[r["id"]] for r in rows]
        ),
        "accept_to_first_dial_ms": ms_percentiles(
            [first_at[r["provider_conference_id"]] - r["accepted_at"].timestamp() for r in dialed]
        ),
        "polls_per_conference": round(sum(r["poll_count"] for r in rows) / max(len(rows), 1), 3),
        "answer_202_to_final_ms": ms_percentiles(
            [r["finalized_at"].timestamp() - answered[r["id"]] for r in finished]
        ),
        "accept_to_final_ms": ms_percentiles(
            [(r["finalized_at"] - r["accepted_at"]).total_seconds() for r in finished]
        ),
        # Over every conference of the pass (the warm-up's too): the ledger cannot tell them
        # apart, and every one of them has finished.
        "provider_requests_per_conference": round(sum(conference_requests.values()) / posted, 3)
        if posted
        else None,
        "provider_requests_by_endpoint_per_conference": {
            k: round(v / posted, 3) for k, v in sorted(conference_requests.items())
        }
        if posted
        else {},
        "provider_refusals": refusals,
        "provider_peak_requests_in_1s": peak_per_second(logged, set(conference_requests), rate),
        "dials_per_participant_max": max(dials) if dials else None,
        "budget_queue": budget_delta(metrics_before, metrics_after),
        "provider_budget_exhausted_lines": log.count(b'"provider_budget_exhausted"'),
        "worker_log_problems": dict(log_problems(log).most_common(10)),
        "worker_cpu_s": round(worker_cpu, 2),
    }


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


async def run_ring(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    loads: dict[str, dict[str, Any]] = {}
    for n, load in enumerate(cfg["loads"]):
        # ABBA: the order that goes first alternates, so a drift of the shared machine over the
        # phase weighs on both orders alike.
        orders = ORDERS if n % 2 == 0 else tuple(reversed(ORDERS))
        passes = {order: await ring_pass(run, cfg, order, load) for order in orders}
        new, base = passes["urgency"], passes[BASELINE]
        loads[f"{round(load * 100)}"] = {
            "load": load,
            "passes": {order: passes[order] for order in ORDERS},
            "ratios": {
                "first_dial_p99": _ratio(
                    new["answer_202_to_first_dial_ms"]["p99"],
                    base["answer_202_to_first_dial_ms"]["p99"],
                ),
                "polls_per_conference": _ratio(
                    new["polls_per_conference"], base["polls_per_conference"]
                ),
                "final_p50": _ratio(
                    new["answer_202_to_final_ms"]["p50"], base["answer_202_to_final_ms"]["p50"]
                ),
                "final_p99": _ratio(
                    new["answer_202_to_final_ms"]["p99"], base["answer_202_to_final_ms"]["p99"]
                ),
            },
        }
    return {
        "settings": {
            "max_rps": cfg["max_rps"],
            "workers": 1,
            "participants": PARTICIPANTS,
            "requests_per_conference": REQUESTS_PER_CONFERENCE,
            "capacity_per_s": round(capacity(cfg["max_rps"]), 3),
            "loads": cfg["loads"],
            "warmup_seconds": cfg["warmup_seconds"],
            "seconds": cfg["seconds"],
            "time_scale": cfg["time_scale"],
            "scenario": "bench/scenario-ring.json (answered; prepare 1 s, ring 2 s, talk 47 s "
            "simulated; latency 0; webhooks off; auto_end_conference false)",
            "worker_env": f"TOTALVOICE_MAX_RPS={cfg['max_rps']}, TOTALVOICE_BUDGET_ORDER="
            "urgency|fifo, WEBHOOKS_ENABLED=false, POLL_*, CLAIM_LEASE_SECONDS=production/scale",
            "targets": cfg["targets"],
        },
        "loads": loads,
    }
