"""Phase 1, ingress: POST /v1/conferences against one `api` process (real Postgres and Kafka),
and against the bare Starlette baseline (bench/bare_app.py) under the same uvicorn settings.

- Saturation: wrk (closed loop, 1 thread, C connections, bench/post.lua: a unique
  Idempotency-Key per request and the bearer token). Accepted commands/s = 2xx answers / s.
- Fixed rate: bench/openloop.py at 1,000 req/s (open loop, latency from the scheduled send time).
- Profile: py-spy on the api while wrk saturates it again (a separate, unmeasured pass).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import asyncpg

from bench import profile
from bench.stack import API_TOKEN, BENCH, Run, free_port, service_env, wait_http


def ensure_wrk() -> str:
    """wrk from Debian's package, installed with apt when missing (root only)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is missing: apt-get install wrk")
    print("bench: installing wrk with apt-get", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        timeout=300,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


def wrk(url: str, seconds: int, connections: int, key_prefix: str) -> dict[str, Any]:
    argv = [
        ensure_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "post.lua"),
        url,
        "--",
        key_prefix,
        API_TOKEN,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((s for s in done.stdout.splitlines() if s.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    errors = raw["errors"]
    statuses = {k: raw["statuses"][k] for k in sorted(raw["statuses"])}
    accepted = sum(n for status, n in statuses.items() if status.startswith("2"))
    return {
        "connections": connections,
        "seconds": round(seconds_run, 3),
        "requests": raw["requests"],
        "accepted": accepted,
        "accepted_per_s": round(accepted / seconds_run, 1),
        "statuses": statuses,
        "non_2xx": raw["requests"] - accepted,
        "socket_errors": {k: v for k, v in errors.items() if k != "status" and v},
        "latency_ms": {k: round(v / 1000, 3) for k, v in raw["latency_us"].items()},
    }


def open_loop(url: str, rate: int, seconds: int, key_prefix: str) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(BENCH / "openloop.py"),
        "--url",
        url,
        "--rate",
        str(rate),
        "--duration",
        str(seconds),
        "--warmup",
        "2",
        "--token",
        API_TOKEN,
        "--key-prefix",
        key_prefix,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"openloop failed: {done.stderr[-1000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one target: totals over all of them, and each round's rate."""
    seconds = sum(r["seconds"] for r in rounds)
    accepted = sum(r["accepted"] for r in rounds)
    statuses: dict[str, int] = {}
    for r in rounds:
        for status, n in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {
        "connections": rounds[0]["connections"],
        "seconds": round(seconds, 3),
        "requests": sum(r["requests"] for r in rounds),
        "accepted": accepted,
        "accepted_per_s": round(accepted / seconds, 1),
        "accepted_per_s_by_round": [r["accepted_per_s"] for r in rounds],
        "statuses": statuses,
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "latency_ms_by_round": [r["latency_ms"] for r in rounds],
        "latency_ms": max((r["latency_ms"] for r in rounds), key=lambda x: x["p99"]),
        "server_cpu_share": round(
            sum(r["server_cpu_share"] * r["seconds"] for r in rounds) / seconds, 3
        ),
    }


async def run_ingress(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    database_url = await run.fresh_database("ingress")
    topics = await run.fresh_topics("ingress")
    bare_port, api_port = free_port(), free_port()
    bare = run.start(
        "bare",
        [sys.executable, str(BENCH / "bare_app.py"), "--port", str(bare_port)],
        {**os.environ},
    )
    api = run.start_service(
        "api", ["api", "--port", str(api_port)], service_env(database_url, topics)
    )
    await wait_http(f"http://127.0.0.1:{bare_port}/healthz", 30, bare)
    await wait_http(f"http://127.0.0.1:{api_port}/readyz", 60, api)
    urls = {
        "bare": f"http://127.0.0.1:{bare_port}/v1/conferences",
        "api": f"http://127.0.0.1:{api_port}/v1/conferences",
    }
    seconds, conns, rate = cfg["saturate_seconds"], cfg["connections"], cfg["fixed_rate"]
    tag = f"{run.run_id}"
    result: dict[str, Any] = {
        "settings": {
            "wrk": f"wrk -t1 -c{conns} -d{seconds}s -s bench/post.lua, "
            f"{cfg['saturate_rounds']} interleaved rounds",
            "fixed_rate": rate,
            "low_rate": cfg["low_rate"],
            "fixed_seconds": cfg["fixed_seconds"],
            "api_env": "API_TOKENS=bench:bench-token, LOG_FORMAT=json, LOG_LEVEL=INFO, "
            "DATABASE_POOL_MAX=10 (defaults)",
        },
        "saturation": {},
        "fixed": {},
    }
    for name, url in urls.items():  # warm-up: connections, prepared statements, Kafka metadata
        wrk(url, 2, conns, f"warm-{tag}-{name}")
    procs = {"bare": bare, "api": api}
    # Saturation in interleaved rounds (bare, api, bare, api, …): a burst of load from
    # someone else's tests then weighs on both sides of the ratio.
    rounds: dict[str, list[dict[str, Any]]] = {"bare": [], "api": []}
    for r in range(cfg["saturate_rounds"]):
        for name, url in urls.items():
            print(f"bench: ingress saturation {name} round {r + 1} ({seconds}s)", flush=True)
            cpu_before = procs[name].cpu_seconds()
            measured = wrk(url, seconds, conns, f"sat-{tag}-{name}-{r}")
            measured["server_cpu_share"] = round(
                (procs[name].cpu_seconds() - cpu_before) / measured["seconds"], 3
            )
            rounds[name].append(measured)
    for name, measured_rounds in rounds.items():
        result["saturation"][name] = _combine(measured_rounds)
    for name, url in urls.items():
        print(f"bench: ingress fixed {rate}/s {name} ({cfg['fixed_seconds']}s)", flush=True)
        cpu_before = procs[name].cpu_seconds()
        measured = open_loop(url, rate, cfg["fixed_seconds"], f"fix-{tag}-{name}")
        measured["server_cpu_share"] = round(
            (procs[name].cpu_seconds() - cpu_before) / (cfg["fixed_seconds"] + 2), 3
        )
        result["fixed"][name] = measured
    # One more point below the target rate, api only: where the latency knee is.
    low = cfg["low_rate"]
    print(f"bench: ingress fixed {low}/s api ({cfg['fixed_seconds']}s)", flush=True)
    cpu_before = api.cpu_seconds()
    measured = open_loop(urls["api"], low, cfg["fixed_seconds"], f"low-{tag}-api")
    measured["server_cpu_share"] = round(
        (api.cpu_seconds() - cpu_before) / (cfg["fixed_seconds"] + 2), 3
    )
    result["fixed"]["api_low"] = measured

    # Profile pass: unmeasured, py-spy on the api while wrk saturates it.
    print(f"bench: ingress profile ({cfg['profile_seconds']}s)", flush=True)
    cpu_before = api.cpu_seconds()
    prof = profile.start(run, "api-ingress", api.pid, cfg["profile_seconds"] + 2)
    profiled = wrk(urls["api"], cfg["profile_seconds"], conns, f"prof-{tag}")
    prof.finish()
    result["profile"] = {
        "svg": prof.svg.name,
        "accepted_per_s_while_profiled": profiled["accepted_per_s"],
        "api_cpu_share": round((api.cpu_seconds() - cpu_before) / profiled["seconds"], 3),
        **profile.top_entries(prof.raw),
    }

    # Cross-check with what the api stored: every 2xx left an ingress_request row.
    connection = await asyncpg.connect(database_url)
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM ingress_request WHERE idempotency_key LIKE $1",
            f"sat-{tag}-api-%",
        )
    finally:
        await connection.close()
    result["saturation"]["api"]["ingress_rows_stored"] = stored
    run.stop(api)
    run.stop(bare)

    sat, fixed = result["saturation"], result["fixed"]

    def ratio(api: float | None, bare: float | None, digits: int) -> float | None:
        return None if api is None or not bare else round(api / bare, digits)

    result["ratios"] = {
        "saturation_api_over_bare": ratio(
            sat["api"]["accepted_per_s"], sat["bare"]["accepted_per_s"], 3
        ),
        "fixed_p99_api_over_bare": ratio(
            fixed["api"]["latency_ms"]["p99"], fixed["bare"]["latency_ms"]["p99"], 2
        ),
        "fixed_p50_api_over_bare": ratio(
            fixed["api"]["latency_ms"]["p50"], fixed["bare"]["latency_ms"]["p50"], 2
        ),
    }
    return result
