"""Phase 3, the poll schedule at scale: 10k and 100k conferences in flight.

Two bench databases are loaded straight into `conference` (status 'in_progress',
next_action_at spread uniformly over now ± 60 s, so about half are due) and `participant` (2
each, dialed), with one INSERT … SELECT generate_series each. Then, alternating between the two
in rounds so that outside load weighs on both sides of each ratio:

- claim latency: `PostgresStore.claim_due` itself (the exact SQL of service/adapters/postgres.py,
  on a pool opened by the service's own `open_pool`, 10 connections like the worker), called
  repeatedly with the worker's batch (50) and lease; after each timed claim the batch is put
  back due, untimed, so the due set keeps its size. The plan of the claim statement (EXPLAIN
  ANALYZE, rolled back) is kept as evidence.
- polls/s: the poller's loop without a provider — claim a batch, then `PostgresStore.save` each
  conference concurrently (as run_schedule's gather does), with next_action_in = 0 so the due
  set never drains and the store is the only limit.

Then, one size after the other, worker RSS: a real `python -m service worker` against the
database and the simulator, RSS sampled from /proc/<pid>/status while it works through the due
conferences (the simulator does not know them, so each poll gets the provider's 404
"conferência não encontrada" and the conference is rescheduled: the claim / GET / save path of a
poll that finds nothing new). At 100k the worker is also profiled with py-spy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bench import profile
from bench.pipeline import ms_percentiles, wait_logged
from bench.stack import Run, service_env
from service.adapters.postgres import PostgresStore, _init_connection, open_pool
from service.domain.conference import ConferenceStatus

POLLING = (ConferenceStatus.IN_PROGRESS,)
DIALING = (ConferenceStatus.ACCEPTED, ConferenceStatus.DIALING)  # the dialer's claim
BATCH = 50  # WorkerSettings.claim_batch default
LEASE = 60.0  # WorkerSettings.claim_lease_seconds default

_LOAD = """
WITH c AS (
    INSERT INTO conference (
        id, command_id, caller, idempotency_key, status, reference, metadata,
        requested_at, accepted_at, provider_conference_id, dialed_at, poll_count,
        next_action_at, last_sequence)
    SELECT gen_random_uuid(), gen_random_uuid(), 'bench', 'bench-' || i, 'in_progress', 'bench',
           '{}'::jsonb, now() - interval '2 minutes', now() - interval '2 minutes',
           (900000000 + i)::text, now() - interval '2 minutes', 1,
           now() + make_interval(secs => random() * 120 - 60), 2
      FROM generate_series($1::int, $2::int - 1) AS i
    RETURNING id, provider_conference_id
)
INSERT INTO participant (
    conference_id, position, number, record, dial_state, dial_started_at, provider_call_id,
    provider_status, started_at)
SELECT c.id, p.position, '+55489' || lpad(((c.provider_conference_id::bigint - 900000000) * 2
                                           + p.position)::text, 8, '0'),
       false, 'dialed', now() - interval '2 minutes',
       (2000000000 + (c.provider_conference_id::bigint - 900000000) * 2 + p.position)::text,
       'em andamento', now() - interval '2 minutes'
  FROM c CROSS JOIN (VALUES (0::smallint), (1::smallint)) AS p(position)
"""

_RESPREAD_ALL = """
UPDATE conference
   SET claim_token = NULL, claimed_at = NULL, leased_until = NULL, poll_count = 1,
       status = 'in_progress', next_action_at = now() + make_interval(secs => random() * 120 - 60)
"""

# A claimed batch goes back due (somewhere in the last minute), so the due set keeps its size
# and every timed claim finds a full batch.
_PUT_BACK = """
UPDATE conference
   SET claim_token = NULL, claimed_at = NULL, leased_until = NULL,
       next_action_at = now() - make_interval(secs => random() * 60)
 WHERE id = ANY($1)
"""


async def _claim_statement(
    database_url: str, statuses: tuple[ConferenceStatus, ...]
) -> tuple[str, tuple[Any, ...]]:
    """The claim SQL and arguments exactly as claim_due sends them, caught with asyncpg's query
    logger on a one-connection pool; the claim is then undone."""
    seen: list[tuple[str, tuple[Any, ...]]] = []

    async def init(connection: asyncpg.Connection) -> None:
        await _init_connection(connection)
        connection.add_query_logger(lambda q: seen.append((q.query, tuple(q.args))))

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, init=init)
    try:
        claimed = await PostgresStore(pool, "bench").claim_due(statuses, BATCH, LEASE)
        async with pool.acquire() as connection:
            await connection.execute(_PUT_BACK, [c.id for c in claimed])
    finally:
        await pool.close()
    return next((q, a) for q, a in seen if "SKIP LOCKED" in q)


async def explain_claim(
    database_url: str, statuses: tuple[ConferenceStatus, ...] = POLLING
) -> list[str]:
    query, args = await _claim_statement(database_url, statuses)
    connection = await asyncpg.connect(database_url)
    try:
        transaction = connection.transaction()
        await transaction.start()
        try:
            rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", *args)
        finally:
            await transaction.rollback()
    finally:
        await connection.close()
    return [r[0] for r in rows]


async def claim_latency(
    store: PostgresStore,
    pool: asyncpg.Pool,
    claims: int,
    statuses: tuple[ConferenceStatus, ...] = POLLING,
) -> list[float]:
    """Seconds per `claim_due` call; each claimed batch is put back (due again), untimed."""
    timings: list[float] = []
    for _ in range(claims):
        started = time.perf_counter()
        claimed = await store.claim_due(statuses, BATCH, LEASE)
        timings.append(time.perf_counter() - started)
        if statuses == POLLING and len(claimed) < BATCH:
            raise RuntimeError(f"only {len(claimed)} conferences were due: the set ran dry")
        async with pool.acquire() as connection:
            await connection.execute(_PUT_BACK, [c.id for c in claimed])
    return timings


async def polls_per_second(store: PostgresStore, seconds: float) -> tuple[int, int, float]:
    """(claims, polls saved, seconds) of the poller's loop without a provider."""
    saved = 0
    claims = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        due = await store.claim_due(POLLING, BATCH, LEASE)
        claims += 1
        if not due:
            continue
        for conference in due:
            conference.poll_count += 1
        outcomes = await asyncio.gather(*(store.save(c, [], 0.0) for c in due))
        saved += sum(1 for ok in outcomes if ok)
    return claims, saved, time.perf_counter() - started


async def worker_rss(
    run: Run,
    database_url: str,
    sim_url: str,
    label: str,
    seconds: float,
    profiled: bool,
    cfg: dict[str, Any],
) -> dict[str, Any]:
    topics = await run.fresh_topics(f"rss{label}")
    env = service_env(
        database_url, topics, TOTALVOICE_BASE_URL=sim_url, TOTALVOICE_MAX_RPS=str(cfg["max_rps"])
    )
    connection = await asyncpg.connect(database_url)
    try:
        polls_before = await connection.fetchval("SELECT sum(poll_count) FROM conference")
        worker = run.start_service(f"worker-rss{label}", ["worker"], env)
        await wait_logged(worker, b"worker_started", 60)
        prof = profile.start(run, f"worker-poll-{label}", worker.pid, seconds) if profiled else None
        samples: list[int] = []
        cpu_before = worker.cpu_seconds()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"the worker exited: see {worker.log_path}")
            samples.append(worker.rss_bytes()[0])
            await asyncio.sleep(0.5)
        rss, hwm = worker.rss_bytes()
        cpu = worker.cpu_seconds() - cpu_before
        if prof is not None:
            prof.finish()
        run.stop(worker)
        polls_after = await connection.fetchval("SELECT sum(poll_count) FROM conference")
    finally:
        await connection.close()
    result: dict[str, Any] = {
        "seconds": seconds,
        "rss_mb_start": round(samples[0] / 2**20, 1) if samples else None,
        "rss_mb_end": round(rss / 2**20, 1),
        "rss_mb_peak": round(max([*samples, rss]) / 2**20, 1),
        "vm_hwm_mb": round(hwm / 2**20, 1),
        "polls_done": int(polls_after - polls_before),
        "polls_per_s": round((polls_after - polls_before) / seconds, 1),
        "worker_cpu_share": round(cpu / seconds, 3),
    }
    if prof is not None:
        result["profile"] = {"svg": prof.svg.name, **profile.top_entries(prof.raw)}
    return result


class Schedule:
    """One bench database holding `size` conferences in flight, with a pool opened by the
    service's own open_pool (10 connections, like the worker's)."""

    def __init__(self, size: int, database_url: str, pool: asyncpg.Pool) -> None:
        self.size = size
        self.label = f"{size // 1000}k"
        self.database_url = database_url
        self.pool = pool
        self.store = PostgresStore(pool, "bench")

    @classmethod
    async def create(cls, run: Run, size: int) -> tuple[Schedule, float]:
        database_url = await run.fresh_database(f"poll{size // 1000}k")
        pool = await open_pool(database_url, 2, 10)
        started = time.perf_counter()
        async with pool.acquire() as connection:
            await connection.execute(_LOAD, 0, size)
        return cls(size, database_url, pool), time.perf_counter() - started

    async def respread(self) -> dict[str, int]:
        """Every conference unclaimed and spread over now ± 60 s again, then VACUUM ANALYZE."""
        async with self.pool.acquire() as connection:
            await connection.execute(_RESPREAD_ALL)
            await connection.execute("VACUUM ANALYZE conference")
            await connection.execute("VACUUM ANALYZE participant")
            return {
                "in_flight": await connection.fetchval(
                    "SELECT count(*) FROM conference WHERE next_action_at IS NOT NULL"
                ),
                "due": await connection.fetchval(
                    "SELECT count(*) FROM conference WHERE next_action_at <= now()"
                ),
            }


async def run_schedule(run: Run, cfg: dict[str, Any], sim_url: str) -> dict[str, Any]:
    """Both sizes are loaded first, then measured in interleaved rounds (10k, 100k, 10k, …),
    so that load from other engineers' tests weighs on both sides of each ratio."""
    schedules: list[Schedule] = []
    out: dict[str, Any] = {}
    try:
        for size in cfg["sizes"]:
            print(f"bench: poll schedule: loading {size:,} conferences", flush=True)
            schedule, load_seconds = await Schedule.create(run, size)
            schedules.append(schedule)
            out[schedule.label] = {"load_seconds": round(load_seconds, 2)}
        for schedule in schedules:
            out[schedule.label] |= await schedule.respread()
            out[schedule.label]["plan"] = await explain_claim(schedule.database_url)
            await claim_latency(schedule.store, schedule.pool, 20)  # warm statements and cache

        rounds = cfg["rounds"]
        timings: dict[str, list[float]] = {s.label: [] for s in schedules}
        print(f"bench: poll schedule: claim latency, {rounds} interleaved rounds", flush=True)
        for _ in range(rounds):
            for schedule in schedules:
                timings[schedule.label] += await claim_latency(
                    schedule.store, schedule.pool, cfg["claims"] // rounds
                )
        # The dialer claims too, every 0.2 s while idle, with the same SQL: here it finds
        # nothing (every conference in flight is being polled), as in a steady state.
        idle: dict[str, list[float]] = {s.label: [] for s in schedules}
        print("bench: poll schedule: the dialer's claim when nothing is to dial", flush=True)
        for _ in range(rounds):
            for schedule in schedules:
                idle[schedule.label] += await claim_latency(
                    schedule.store, schedule.pool, cfg["idle_claims"] // rounds, DIALING
                )
        for schedule in schedules:
            values = timings[schedule.label]
            out[schedule.label]["claim"] = {
                "claims": len(values),
                "batch": BATCH,
                "latency_ms": ms_percentiles(values)
                | {"mean": round(sum(values) / len(values) * 1000, 2)},
            }
            values = idle[schedule.label]
            out[schedule.label]["dialer_idle_claim"] = {
                "claims": len(values),
                "latency_ms": ms_percentiles(values)
                | {"mean": round(sum(values) / len(values) * 1000, 2)},
            }
            out[schedule.label]["dialer_idle_plan"] = await explain_claim(
                schedule.database_url, DIALING
            )

        print(f"bench: poll schedule: polls/s, {rounds} interleaved rounds", flush=True)
        polls: dict[str, list[tuple[int, int, float]]] = {s.label: [] for s in schedules}
        for schedule in schedules:
            await schedule.respread()
        for _ in range(rounds):
            for schedule in schedules:
                polls[schedule.label].append(
                    await polls_per_second(schedule.store, cfg["polls_seconds"] / rounds)
                )
        for schedule in schedules:
            measured = polls[schedule.label]
            claims, saved, seconds = (sum(x) for x in zip(*measured, strict=True))
            out[schedule.label]["polls"] = {
                "seconds": round(seconds, 2),
                "claims": claims,
                "polls": saved,
                "polls_per_s": round(saved / seconds, 1),
                "polls_per_s_by_round": [round(p / s, 1) for _, p, s in measured],
            }

        for schedule in schedules:
            await schedule.respread()
            print(
                f"bench: poll schedule {schedule.label}: worker RSS ({cfg['rss_seconds']}s)",
                flush=True,
            )
            out[schedule.label]["worker"] = await worker_rss(
                run,
                schedule.database_url,
                sim_url,
                schedule.label,
                cfg["rss_seconds"],
                schedule is schedules[-1],
                cfg,
            )
    finally:
        for schedule in schedules:
            await schedule.pool.close()

    small, large = schedules[0].label, schedules[-1].label
    claim_small = out[small]["claim"]["latency_ms"]
    claim_large = out[large]["claim"]["latency_ms"]
    return {
        "settings": {
            "sizes": cfg["sizes"],
            "batch": BATCH,
            "lease_seconds": LEASE,
            "claims_per_size": cfg["claims"],
            "dialer_idle_claims_per_size": cfg["idle_claims"],
            "rounds": cfg["rounds"],
            "pool": "service open_pool(min 2, max 10)",
            "next_action_at": "uniform over now ± 60 s (about half due); claimed batches are "
            "put back due (over the last minute), so every claim finds a full batch",
        },
        "sizes": out,
        "ratios": {
            "claim_p50_large_over_small": round(claim_large["p50"] / claim_small["p50"], 2),
            "claim_p99_large_over_small": round(claim_large["p99"] / claim_small["p99"], 2),
            "dialer_idle_claim_p50_large_over_small": round(
                out[large]["dialer_idle_claim"]["latency_ms"]["p50"]
                / out[small]["dialer_idle_claim"]["latency_ms"]["p50"],
                2,
            ),
            "polls_per_s_large_over_small": round(
                out[large]["polls"]["polls_per_s"] / out[small]["polls"]["polls_per_s"], 2
            ),
            "worker_rss_large_over_small": round(
                out[large]["worker"]["rss_mb_peak"] / out[small]["worker"]["rss_mb_peak"], 2
            ),
        },
        "labels": [small, large],
    }
