"""`python -m bench`: run the five phases against the local stack, print one table, write
bench/results/<stamp>.json and BENCHMARKS.md. See BENCHMARKS.md for what each figure means.

    python -m bench [--only ingress,pipeline,budget,ring,schedule] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench import report
from bench.budget import run_budget
from bench.ingress import ensure_wrk, run_ingress
from bench.pipeline import run_pipeline
from bench.ring import run_ring
from bench.schedule import run_schedule
from bench.stack import BENCH, Run, connect_admin, start_simulator, wait_http, wait_stack

PHASES = ("ingress", "pipeline", "budget", "ring", "schedule")

CONFIG: dict[str, dict[str, Any]] = {
    "ingress": {
        "saturate_seconds": 6,
        "saturate_rounds": 2,
        "connections": 64,
        "fixed_rate": 1000,
        "low_rate": 500,
        "fixed_seconds": 10,
        "profile_seconds": 8,
    },
    "pipeline": {
        "conferences": 1500,
        "profile_conferences": 400,
        # 60: a call of 8 simulated seconds lasts 133 ms, longer than the spread of a
        # conference's dials under load, so every dial finds its room still open.
        "time_scale": 60,
        "max_rps": 10000,
        "timeout_seconds": 120,
    },
    # The pipeline under a provider budget: a burst to running workers that share
    # TOTALVOICE_MAX_RPS. 72 conferences of 1-3 participants need ~5 requests each: ~72 s of
    # budget at 5/s, per configuration.
    "budget": {
        "workers": [1, 3],
        "max_rps": 5,
        "conferences": 72,
        "time_scale": 60,
        "lease_seconds": 10,
    },
    # How soon the phone rings (issue 16): ONE worker, TOTALVOICE_MAX_RPS=20, an open loop of
    # 2-participant conferences at 50 % and 90 % of the budget's conference capacity (20 / 8
    # requests = 2.5/s), urgency order and fifo baseline: 4 passes of 8 + 32 s, ~4 minutes.
    "ring": {
        "max_rps": 20,
        "loads": [0.5, 0.9],
        "warmup_seconds": 8,
        "seconds": 32,
        "drain_seconds": 60,
        "time_scale": 10,
        # p99 of 202 -> first dial (ms) by load; polls/conference and 202 -> final at most
        # this many times the fifo baseline's.
        "targets": {"first_dial_p99_ms": {"50": 300, "90": 1000}, "no_worse_than_fifo": 1.1},
    },
    "schedule": {
        "sizes": [10_000, 100_000],
        "claims": 300,
        "idle_claims": 60,
        "rounds": 3,
        "polls_seconds": 9,
        "rss_seconds": 20,
        "max_rps": 10000,
    },
}

QUICK = {
    "ingress": {
        "saturate_seconds": 3,
        "saturate_rounds": 1,
        "fixed_seconds": 4,
        "profile_seconds": 3,
    },
    "pipeline": {"conferences": 200, "profile_conferences": 100},
    "budget": {"conferences": 24},
    "ring": {"warmup_seconds": 4, "seconds": 10},
    "schedule": {"claims": 90, "idle_claims": 30, "polls_seconds": 3, "rss_seconds": 6},
}


async def _postgres_version() -> str:
    connection = await connect_admin()
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


async def bench(
    phases: list[str], config: dict[str, dict[str, Any]], keep: bool, quick: bool
) -> int:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H%M%SZ")
    # Only a full run (every phase, full length) leaves files to keep in bench/results/; a
    # partial or quick one writes everything into its (ignored) work folder.
    complete = phases == list(PHASES) and not quick
    work_dir = BENCH / "results" / f"{stamp}-work"
    results_dir = BENCH / "results" if complete else work_dir
    run = Run(run_id=uuid.uuid4().hex[:8], stamp=stamp, results_dir=results_dir, log_dir=work_dir)
    run.log_dir.mkdir(parents=True, exist_ok=True)
    if "ingress" in phases:
        ensure_wrk()
    await wait_stack()
    results: dict[str, Any] = {
        "started_at": now.isoformat(timespec="seconds"),
        "run_id": run.run_id,
        "phases": phases,
        "quick": quick,
        "config": {p: config[p] for p in phases},
        "machine": report.machine(),
        "versions": report.versions(await _postgres_version()),
        "noise": {
            "calibration_ms_start": report.calibration_ms(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
    }
    started = time.monotonic()
    print(f"bench: run {run.run_id}, logs in {run.log_dir}", flush=True)
    try:
        if "ingress" in phases:
            results["ingress"] = await run_ingress(run, config["ingress"])
        sim_url: str | None = None
        if "pipeline" in phases:
            sim, sim_url = start_simulator(
                run, "simulator", BENCH / "scenario.json", config["pipeline"]["time_scale"]
            )
            await wait_http(f"{sim_url}/_simulator/health", 30, sim)
            results["pipeline"] = await run_pipeline(run, config["pipeline"], sim, sim_url)
        if "budget" in phases:
            # Its own simulator, api and workers per configuration (bench/budget.py).
            results["budget"] = await run_budget(run, config["budget"])
        if "ring" in phases:
            # Its own simulator, api and worker per order and load (bench/ring.py).
            results["ring"] = await run_ring(run, config["ring"])
        if "schedule" in phases:
            if sim_url is None:
                sim, sim_url = start_simulator(
                    run, "simulator", BENCH / "scenario.json", config["pipeline"]["time_scale"]
                )
                await wait_http(f"{sim_url}/_simulator/health", 30, sim)
            results["schedule"] = await run_schedule(run, config["schedule"], sim_url)
    finally:
        run.stop_all()
        if not keep:
            try:
                await run.drop_databases()
                await run.delete_topics()
            except Exception as error:  # never hide the run's own error behind a cleanup one
                print(f"bench: cleanup failed ({error!r}); left: {run.databases} {run.topics}")
    results["noise"]["calibration_ms_end"] = report.calibration_ms()
    results["noise"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["duration_s"] = round(time.monotonic() - started, 1)
    json_path, md_path = report.write(results, results_dir, stamp, complete)
    print()
    print(report.table(results))
    print()
    print(
        f"bench: {results['duration_s']:.0f} s; calibration "
        f"{results['noise']['calibration_ms_start']} -> {results['noise']['calibration_ms_end']}"
        f" ms; wrote {json_path.relative_to(BENCH.parent)}"
        + (f" and {md_path.name}" if md_path else " (BENCHMARKS.md: only from a full run)")
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--only", default=",".join(PHASES), help="phases, comma-separated")
    parser.add_argument("--quick", action="store_true", help="shorter phases (trying it out)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and topics")
    args = parser.parse_args(argv)
    phases = [p for p in PHASES if p in {x.strip() for x in args.only.split(",")}]
    if not phases:
        parser.error(f"--only takes some of {', '.join(PHASES)}")
    config = {name: dict(values) for name, values in CONFIG.items()}
    if args.quick:
        for name, values in QUICK.items():
            config[name].update(values)
    return asyncio.run(bench(phases, config, args.keep, args.quick))
