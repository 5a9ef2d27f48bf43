"""What a run reports: the machine and versions, one table of figures with their same-run
baselines, ratios and targets, and BENCHMARKS.md (rewritten from the latest results)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.stack import ROOT

# What the profiles led to, each measured against what it replaced on the same machine, the same
# day (figures from `make bench` runs or, where named, an interleaved in-process A/B).
CHANGES = """\
- **Provider client on aiohttp instead of httpx** (worker): httpcore scanned its whole pool on
  every request (60-74 % of the worker's samples). Pipeline 60 -> 139 conferences/s, worker
  CPU 15.1 -> 4.8 ms per conference (two `--only pipeline` runs in a row).
- **Dialing in two commits instead of four; claimed work kept flowing; Kafka batches accepted
  eight at a time** (worker): the dial protocol still commits the `dialing` marks before any
  dial. Pipeline 139 -> 179 conferences/s, 4.8 -> 3.7 ms CPU each.
- **Our log lines rendered straight to stdout with orjson** (no stdlib logging in between), a
  command serialized once instead of three times, the route read from the scope, no
  re-validation of a command just built (api): 517 -> 419 µs CPU per request, 4 interleaved
  in-process A/B pairs; `--only ingress` 1,475 -> 2,110 accepted/s in the same session.
- **Garbage collector settled after start-up** (`gc.freeze()`, young generation every 20,000
  allocations; api and worker): 371 -> 306 µs CPU per request, 4 interleaved A/B pairs.
- **Ingress keys stored by group commit** (api): requests that arrive together share one
  `INSERT … SELECT FROM unnest(…)` and one commit; each is answered only once its row is
  committed. 350 -> 219 µs CPU per request (4 interleaved in-process A/B pairs); `--only
  ingress` 2,163 -> 3,769 accepted/s, p99 at 1,000 req/s 43 -> 9 ms.
- Earlier: the claim index by status (idle dialer claim at 100k 18.6 -> 0.6 ms); no asyncpg
  reset query on release (+10-25 % ingress); no outbox look-up on saves without events.
"""

PACKAGES = (
    "starlette", "uvicorn", "httptools", "uvloop", "asyncpg", "aiokafka", "aiohttp", "orjson",
    "pydantic", "structlog", "py-spy",
)  # fmt: skip


def calibration_ms() -> float:
    """A fixed pure-Python workload, best of 3: measured at the start and the end of a run, it
    shows how much the machine was shared (other engineers run tests here too)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    debian = Path("/etc/debian_version")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "os": f"Debian {debian.read_text().strip()}" if debian.exists() else platform.platform(),
    }


def _command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else ""


def versions(postgres: str) -> dict[str, Any]:
    stack = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))
    kafka_libs = sorted((stack / "kafka").glob("libs-*"))
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "missing"
    commit = _command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _command_output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "service"])
    return {
        "python": platform.python_version(),
        "postgres": postgres,
        "kafka": kafka_libs[-1].name.split("-")[1] if kafka_libs else "unknown",
        "wrk": _command_output(["wrk", "-v"]).split(" [")[0],
        "packages": packages,
        "commit": commit + (" (service/ modified)" if dirty else ""),
    }


# --- the table -------------------------------------------------------------------------------


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _status(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(metric, value, baseline, ratio, target, status) per line of the table."""
    out: list[tuple[str, str, str, str, str, str]] = []
    ing = results.get("ingress")
    if ing:
        api, bare = ing["saturation"]["api"], ing["saturation"]["bare"]
        fa, fb = ing["fixed"]["api"], ing["fixed"]["bare"]
        r = ing["ratios"]
        rate = ing["settings"]["fixed_rate"]
        out += [
            ("ingress: accepted commands/s (saturation)",
             f"{api['accepted_per_s']:,.0f}" + _refused(api["statuses"]),
             f"bare {bare['accepted_per_s']:,.0f}", _n(r["saturation_api_over_bare"], ".3f"),
             ">= 2,000", _status(api["accepted_per_s"], 2000, True)),
            (f"ingress: p50 ms at {rate:,} req/s (open loop)", _n(fa["latency_ms"]["p50"], ".2f"),
             f"bare {_n(fb['latency_ms']['p50'], '.2f')}", _n(r["fixed_p50_api_over_bare"], ".1f"),
             "", ""),
            (f"ingress: p99 ms at {rate:,} req/s (open loop)", _n(fa["latency_ms"]["p99"], ".2f"),
             f"bare {_n(fb['latency_ms']['p99'], '.2f')}", _n(r["fixed_p99_api_over_bare"], ".1f"),
             "<= 50", _status(fa["latency_ms"]["p99"], 50, False)
             if not _refused(fa["statuses"]) else "n/a (refused)"),
            (f"ingress: p99 ms at {ing['settings']['low_rate']:,} req/s (api only)",
             _n(_get(ing, "fixed", "api_low", "latency_ms", "p99"), ".2f"), "", "", "", ""),
            (f"ingress: answered at {rate:,} req/s", f"{fa['rate_achieved']:,.0f}"
             + _refused(fa["statuses"]), f"bare {fb['rate_achieved']:,.0f}", "", "", ""),
        ]  # fmt: skip
    pipe = _get(results, "pipeline", "measured")
    if pipe:
        n = pipe["conferences"]
        a2f, e2f = pipe["accept_to_final_ms"], pipe["answer_202_to_final_event_ms"]
        out += [
            (f"pipeline: conferences settled/s ({n}, 1 worker)", f"{pipe['settled_per_s']}",
             f"wall {pipe['settled_per_s_wall']}", "", ">= 150",
             _status(pipe["settled_per_s"], 150, True)),
            ("pipeline: provider requests/conference",
             f"{pipe['provider_requests_per_conference']}", "", "", "<= 6",
             _status(pipe["provider_requests_per_conference"], 6, False)),
            ("pipeline: accept -> final p50 / p99 ms", f"{a2f['p50']} / {a2f['p99']}",
             "", "", "", ""),
            ("pipeline: 202 -> final event p50 / p99 ms (preloaded)",
             f"{e2f['p50']} / {e2f['p99']}", "", "", "", ""),
            ("pipeline: 202 -> first dial p50 / p99 ms (preloaded: waits for the worker)",
             _first_dial(pipe.get("answer_202_to_first_dial_ms")), "", "", "", ""),
            ("pipeline: statuses", ", ".join(f"{k} {v}" for k, v in pipe["statuses"].items())
             + f"; provider refusals {pipe.get('provider_refusals', '?')}", "", "", "", ""),
        ]  # fmt: skip
    budget = results.get("budget")
    if budget:
        rate = budget["settings"]["max_rps"]
        for p in budget["passes"].values():
            w = f"{p['workers']} worker{'s' if p['workers'] > 1 else ''}"
            out += [
                (f"budget: settled/s at {rate}/s shared ({p['conferences']}, {w})",
                 _n(p["settled_per_s"], ".3f"), f"ideal {_n(p['ideal_settled_per_s'], '.3f')}",
                 _n(p["ratio_to_ideal"], ".3f"), ">= 0.9 (ratio)",
                 _status(p["ratio_to_ideal"], 0.9, True)),
                (f"budget: dial resolutions/participant ({w})",
                 f"{p['dial_resolutions_per_participant']}", "", "", "<= 0.05",
                 _status(p["dial_resolutions_per_participant"], 0.05, False)),
                (f"budget: 202 -> first dial p50 / p99 ms ({w}, live)",
                 _first_dial(p["answer_202_to_first_dial_ms"]), "", "", "", ""),
                (f"budget: requests/conference, statuses ({w})",
                 f"{p['provider_requests_per_conference']}; "
                 + ", ".join(f"{k} {v}" for k, v in p["statuses"].items())
                 + f"; refusals {p['provider_refusals']}; max dials/number "
                 f"{p['dials_per_participant_max']}; peak requests in a second "
                 f"{_peak(p['provider_peak_requests_in_1s'], rate)}", "", "", "", ""),
            ]  # fmt: skip
    ring = results.get("ring")
    if ring:
        out += _ring_rows(ring)
    sched = results.get("schedule")
    if sched:
        small, large = sched["labels"]
        s, l_ = sched["sizes"][small], sched["sizes"][large]
        r = sched["ratios"]
        out += [
            (f"schedule: claim p50 ms ({large})", f"{l_['claim']['latency_ms']['p50']}",
             f"{small} {s['claim']['latency_ms']['p50']}", f"{r['claim_p50_large_over_small']}",
             "", ""),
            (f"schedule: claim p99 ms ({large})", f"{l_['claim']['latency_ms']['p99']}",
             f"{small} {s['claim']['latency_ms']['p99']}", f"{r['claim_p99_large_over_small']}",
             "<= 20", _status(l_["claim"]["latency_ms"]["p99"], 20, False)),
            (f"schedule: claim p99 ratio {large}/{small}", f"{r['claim_p99_large_over_small']}",
             "", "", "<= 1.5", _status(r["claim_p99_large_over_small"], 1.5, False)),
            (f"schedule: dialer's idle claim p50 ms ({large})",
             f"{l_['dialer_idle_claim']['latency_ms']['p50']}",
             f"{small} {s['dialer_idle_claim']['latency_ms']['p50']}",
             f"{r['dialer_idle_claim_p50_large_over_small']}", "", ""),
            (f"schedule: polls/s, claim + save ({large})", f"{l_['polls']['polls_per_s']:,.0f}",
             f"{small} {s['polls']['polls_per_s']:,.0f}", f"{r['polls_per_s_large_over_small']}",
             "", ""),
            (f"schedule: worker RSS MB ({large} in flight)", f"{l_['worker']['rss_mb_peak']}",
             f"{small} {s['worker']['rss_mb_peak']}", f"{r['worker_rss_large_over_small']}",
             "<= 250", _status(l_["worker"]["rss_mb_peak"], 250, False)),
            (f"schedule: real worker polls/s ({large})", f"{l_['worker']['polls_per_s']:,.0f}",
             f"{small} {s['worker']['polls_per_s']:,.0f}", "", "", ""),
        ]  # fmt: skip
    return out


def _ring_rows(ring: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """Per load: 202 -> first dial, polls per conference, 202 -> final, urgency beside fifo."""
    st = ring["settings"]
    targets = st["targets"]
    worse = targets["no_worse_than_fifo"]
    out: list[tuple[str, str, str, str, str, str]] = []
    for pct, load in ring["loads"].items():
        new, base = load["passes"]["urgency"], load["passes"]["fifo"]
        r = load["ratios"]
        at = f"{pct} % ({new['offered_per_s']}/s, 1 worker, {st['max_rps']}/s)"
        fd, fd0 = new["answer_202_to_first_dial_ms"], base["answer_202_to_first_dial_ms"]
        limit = targets["first_dial_p99_ms"][pct]
        fin, fin0 = new["answer_202_to_final_ms"], base["answer_202_to_final_ms"]
        final_ok = [x for x in (r["final_p50"], r["final_p99"]) if x is not None]
        out += [
            (f"ring: 202 -> first dial p50 / p99 ms at {at}", _first_dial(fd),
             f"fifo {_first_dial(fd0)}", _n(r["first_dial_p99"], ".3f"), f"p99 <= {limit:,}",
             _status(fd["p99"], limit, False) + _unfinished(new)),
            (f"ring: polls/conference at {pct} %", f"{new['polls_per_conference']}",
             f"fifo {base['polls_per_conference']}", _n(r["polls_per_conference"], ".3f"),
             f"<= {worse} x fifo", _status(r["polls_per_conference"], worse, False)),
            (f"ring: 202 -> final p50 / p99 ms at {pct} %", f"{fin['p50']} / {fin['p99']}",
             f"fifo {fin0['p50']} / {fin0['p99']}",
             f"{_n(r['final_p50'], '.3f')} / {_n(r['final_p99'], '.3f')}", f"<= {worse} x fifo",
             _status(max(final_ok), worse, False) if len(final_ok) == 2 else "n/a"),
            (f"ring: 202 -> accept, accept -> first dial p99 ms at {pct} %",
             f"{new['answer_202_to_accept_ms']['p99']}, {new['accept_to_first_dial_ms']['p99']}",
             f"fifo {base['answer_202_to_accept_ms']['p99']}, "
             f"{base['accept_to_first_dial_ms']['p99']}", "", "", ""),
            (f"ring: budget queue, requests/conference at {pct} %",
             _ring_queue(new, st["max_rps"]), "fifo " + _ring_queue(base, st["max_rps"]),
             "", "", ""),
        ]  # fmt: skip
    return out


def _ring_queue(p: dict[str, Any], rate: float) -> str:
    """'wait 41 ms mean, 3% > 250 ms, 0 refused; 8.0 req/conf; peak 20/s' (and the statuses
    when not every conference completed)."""
    q = p["budget_queue"]
    text = (
        f"wait {_n(q.get('mean_wait_ms'), '.0f')} ms mean, "
        f"{_n(q.get('share_over_250ms'), '.0%')} > 250 ms, {q.get('refused', '?')} refused; "
        f"{p['provider_requests_per_conference']} req/conf; peak "
        f"{_peak(p['provider_peak_requests_in_1s'], rate)}/s"
    )
    if set(p["statuses"]) != {"completed"} or not p["all_final"]:
        text += "; " + ", ".join(f"{k} {v}" for k, v in p["statuses"].items())
    return text


def _unfinished(p: dict[str, Any]) -> str:
    """' (not all final)' when some conference of the pass never reached a final state."""
    return "" if p["all_final"] else " (not all final)"


def _peak(peak: dict[str, int], rate: float) -> str:
    """'5', or '6 (3 of 74 seconds over 5)' when some calendar second got more than `rate`."""
    text = f"{peak['calendar_second']}"
    if peak.get("calendar_seconds_over_rate"):
        text += (
            f" ({peak['calendar_seconds_over_rate']} of {peak['calendar_seconds']} seconds "
            f"over {rate})"
        )
    return text


def _first_dial(figure: dict[str, Any] | None) -> str:
    """'p50 / p99', and on how many conferences when the simulator's log missed some."""
    if not figure:
        return "n/a"
    text = f"{figure['p50']} / {figure['p99']}"
    if figure["measured"] < figure["conferences"]:
        text += f" ({figure['measured']} of {figure['conferences']} in the log)"
    return text


def _n(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _refused(statuses: dict[str, int]) -> str:
    """' (12% not 2xx: 429 1,234)' when more than 1% of the answers were not 2xx."""
    total = sum(statuses.values())
    other = {k: v for k, v in statuses.items() if not k.startswith("2")}
    if not total or sum(other.values()) <= total / 100:
        return ""
    detail = ", ".join(f"{k} {v:,}" for k, v in other.items())
    return f" ({sum(other.values()) / total:.0%} not 2xx: {detail})"


HEADER = ("metric", "value", "baseline (same run)", "ratio", "target", "status")


def table(results: dict[str, Any]) -> str:
    lines = [HEADER, *rows(results)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(HEADER), rule, *(fmt(line) for line in lines[1:])])


def markdown_table(results: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows(results)]
    return "\n".join(lines)


# --- BENCHMARKS.md ---------------------------------------------------------------------------


def _profile_section(title: str, prof: dict[str, Any] | None, limit: int = 10) -> str:
    if not prof or not prof.get("samples"):
        return f"**{title}**: no samples.\n"
    out = [
        f"**{title}** — `bench/results/{prof['svg']}`, {prof['samples']} samples "
        "(py-spy, 100 Hz, non-blocking, idle excluded)\n",
        "Self % is time on top of the stack (a C function's time counts for its Python "
        "caller). Total % is a lower bound: a coroutine resumed by the event loop is sampled "
        "with its own frames only, without the loop's and its callers'.\n",
        "| self % | function (on top of the stack) | | total % | service function "
        "(anywhere on the stack) |",
        "|---:|---|---|---:|---|",
    ]
    layers = ", ".join(
        f"{layer['layer']} {layer['share'] * 100:.0f} %" for layer in prof.get("layers", [])
    )
    out.insert(
        1, f"Where the samples are (first library met from the top of each stack): {layers}.\n"
    )
    own, service = prof["self"][:limit], prof["service_total"][:limit]
    for i in range(max(len(own), len(service))):
        left = own[i] if i < len(own) else None
        right = service[i] if i < len(service) else None
        out.append(
            "| "
            + (f"{left['share'] * 100:.1f} | `{left['function']}`" if left else " | ")
            + " | | "
            + (f"{right['share'] * 100:.1f} | `{right['function']}`" if right else " | ")
            + " |"
        )
    return "\n".join(out) + "\n"


def _history(results_dir: Path) -> str:
    lines = [
        "| run | ingress cmd/s (ratio to bare) | p99 ms @1k | settled/s | req/conf | "
        "budget ratio 1w / 3w | claim p99 ms 100k (ratio) | RSS MB 100k |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in sorted(results_dir.glob("*.json"), reverse=True)[:10]:
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        ing, pipe, sched = r.get("ingress"), _get(r, "pipeline", "measured"), r.get("schedule")
        large = sched["labels"][1] if sched else None

        def cell(value: Any) -> str:
            return "—" if value is None else str(value)

        passes = _get(r, "budget", "passes") or {}
        budget_cell = " / ".join(cell(p.get("ratio_to_ideal")) for p in passes.values()) or "—"

        lines.append(
            f"| `{path.name}` | "
            + (
                f"{ing['saturation']['api']['accepted_per_s']:,.0f} "
                f"({ing['ratios']['saturation_api_over_bare']:.3f})"
                if ing
                else "—"
            )
            + f" | {cell(_get(ing or {}, 'fixed', 'api', 'latency_ms', 'p99'))}"
            + f" | {cell(pipe and pipe['settled_per_s'])}"
            + f" | {cell(pipe and pipe['provider_requests_per_conference'])}"
            + f" | {budget_cell}"
            + (
                f" | {sched['sizes'][large]['claim']['latency_ms']['p99']} "
                f"({sched['ratios']['claim_p99_large_over_small']})"
                f" | {sched['sizes'][large]['worker']['rss_mb_peak']} |"
                if sched
                else " | — | — |"
            )
        )
    return "\n".join(lines)


def benchmarks_md(results: dict[str, Any], results_dir: Path, json_name: str) -> str:
    m, v = results["machine"], results["versions"]
    pk = v["packages"]
    noise = results["noise"]
    sections = [
        "# Benchmarks\n",
        "Written by `make bench` (`bench/run.py`) from its latest run; the figures of every run "
        f"are in `bench/results/*.json`. This run: `bench/results/{json_name}`, "
        f"{results['started_at']}, {results['duration_s']:.0f} s, commit {v['commit']}.\n",
        "Every figure is compared with a baseline **measured in the same run**, because the "
        "machine is shared with other engineers' tests and absolute numbers drift from run to "
        "run: the ratio is the figure to watch.\n",
        "## Machine and versions\n",
        f"- {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Linux {m['kernel']}",
        f"- Python {v['python']}, PostgreSQL {v['postgres']}, Kafka {v['kafka']} (KRaft, one "
        f"broker), {v['wrk']}",
        f"- starlette {pk['starlette']}, uvicorn {pk['uvicorn']} (httptools {pk['httptools']}, "
        f"uvloop {pk['uvloop']}), asyncpg {pk['asyncpg']}, aiokafka {pk['aiokafka']}, "
        f"aiohttp {pk['aiohttp']}, orjson {pk['orjson']}, pydantic {pk['pydantic']}, "
        f"structlog {pk['structlog']}, py-spy {pk['py-spy']}",
        f"- Sharing: CPU calibration {noise['calibration_ms_start']} ms at the start, "
        f"{noise['calibration_ms_end']} ms at the end (a fixed pure-Python loop, best of 3; "
        f"higher = busier machine); load average {noise['loadavg_start']} → "
        f"{noise['loadavg_end']}.\n",
        "## Figures\n",
        markdown_table(results) + "\n",
        "Targets (2-core machine, everything local): ingress ≥ 2,000 accepted commands/s from one "
        "api process and p99 ≤ 50 ms at 1,000 req/s; pipeline ≥ 150 conferences (2 participants) "
        "settled per second by one worker with ≤ 6 provider requests per conference; poll "
        "schedule claim p99 ≤ 20 ms at 100k in flight, 100k/10k claim-latency ratio ≤ 1.5, "
        "worker RSS ≤ 250 MB at 100k in flight; under a provider budget (TOTALVOICE_MAX_RPS=5 "
        "shared by 1 or 3 workers) a burst settles at ≥ 0.9 of the budget's ideal rate with "
        "≤ 0.05 dial resolutions per participant; with one worker at TOTALVOICE_MAX_RPS=20, "
        "202 → first dial p99 ≤ 300 ms at 50 % of the budget's conference capacity and ≤ 1 s "
        "at 90 %, with polls per conference and 202 → final no more than 10 % above the "
        "first-come baseline's (TOTALVOICE_BUDGET_ORDER=fifo) in the same run.\n",
    ]
    ing = results.get("ingress")
    if ing:
        sat_api, sat_bare = ing["saturation"]["api"], ing["saturation"]["bare"]
        fa, fb = ing["fixed"]["api"], ing["fixed"]["bare"]
        sections += [
            "### Ingress details\n",
            f"- Saturation ({ing['settings']['wrk']}): api {sat_api['accepted_per_s']:,.0f}/s "
            f"(rounds {sat_api['accepted_per_s_by_round']}; wrk latency p50 "
            f"{sat_api['latency_ms']['p50']} ms, p99 {sat_api['latency_ms']['p99']} ms in the "
            f"worst round; non-2xx {sat_api['non_2xx']}; api CPU "
            f"{sat_api['server_cpu_share']:.0%} of a core, {sat_api.get('ingress_rows_stored')} "
            f"keys stored), bare {sat_bare['accepted_per_s']:,.0f}/s (rounds "
            f"{sat_bare['accepted_per_s_by_round']}, CPU "
            f"{sat_bare['server_cpu_share']:.0%}).",
            f"- Open loop at {ing['settings']['fixed_rate']:,} req/s for "
            f"{ing['settings']['fixed_seconds']} s after 2 s of warm-up: api p50/p90/p99/max "
            f"{fa['latency_ms']['p50']}/{fa['latency_ms']['p90']}/{fa['latency_ms']['p99']}/"
            f"{fa['latency_ms']['max']} ms (statuses {fa['statuses']}, api CPU "
            f"{fa['server_cpu_share']:.0%}); bare {fb['latency_ms']['p50']}/"
            f"{fb['latency_ms']['p90']}/{fb['latency_ms']['p99']}/{fb['latency_ms']['max']} ms; "
            f"api at {ing['settings']['low_rate']:,} req/s "
            f"{_get(ing, 'fixed', 'api_low', 'latency_ms')} ms. "
            f"Generator send lag p99 {fa['send_lag_ms'].get('p99')} ms, generator CPU "
            f"{fa['generator_cpu_share']:.0%} of a core.\n",
        ]
    pipe = _get(results, "pipeline", "measured")
    if pipe:
        sections += [
            "### Pipeline details\n",
            f"- {pipe['conferences']} conferences settled in {pipe['span_s']} s (first accept → "
            f"last final); {pipe['settled_per_s_wall']}/s counting the worker's start-up and "
            "Kafka group join.",
            f"- Provider requests per conference by endpoint: "
            f"{pipe['provider_requests_by_endpoint_per_conference']}; polls per conference "
            f"{pipe['polls_per_conference']}.",
            f"- accept → final ms {pipe['accept_to_final_ms']}; 202 → final event ms "
            f"{pipe['answer_202_to_final_event_ms']}; worker start → final event ms "
            f"{pipe['worker_start_to_final_event_ms']}"
            + (
                "; 202 → first dial ms (pre-loaded, so the wait for the worker's start is in "
                f"it) {pipe['answer_202_to_first_dial_ms']}."
                if pipe.get("answer_202_to_first_dial_ms")
                else "."
            ),
            f"- Worker CPU {pipe['worker_cpu_s']} s ({pipe['worker_cpu_ms_per_conference']} ms "
            f"per conference), simulator CPU {pipe['simulator_cpu_s']} s, worker peak RSS "
            f"{pipe['worker_peak_rss_mb']} MB.\n",
        ]
    budget = results.get("budget")
    if not budget:
        sections.append(
            "The pipeline under a provider budget (phase 3 of the method) was not part of this "
            "run.\n"
        )
    if budget:
        sections.append("### Pipeline under a provider budget details\n")
        for p in budget["passes"].values():
            sections.append(
                f"- **{p['workers']} worker(s)** at {budget['settings']['max_rps']}/s shared "
                f"(every worker had logged its share in {p['share_wait_s']} s): "
                f"{p['conferences']} conferences, {p['participants']} participants, settled in "
                f"{p['span_s']} s (first 202 → last final); {p['provider_requests']} provider "
                f"requests, by endpoint per conference "
                f"{p['provider_requests_by_endpoint_per_conference']}; at most "
                f"{p['provider_peak_requests_in_1s']['calendar_second']} in one calendar second "
                f"and {p['provider_peak_requests_in_1s']['sliding_1s']} in any 1 s window; "
                f"dial resolutions "
                f"{p['dial_resolutions'] or 'none'} (metric total {p['dial_resolutions_metric']}); "
                f"warnings and errors in the worker logs {p['worker_log_problems'] or 'none'}; "
                f"accept → final ms {p['accept_to_final_ms']}; 202 → first dial ms "
                f"{p['answer_202_to_first_dial_ms']}; worker CPU {p['worker_cpu_s']} s."
            )
        sections.append("")
    ring = results.get("ring")
    if not ring:
        sections.append(
            "How soon the phone rings under a provider budget (phase 4 of the method, `ring`) "
            "was not part of this run.\n"
        )
    if ring:
        st = ring["settings"]
        sections.append("### How soon the phone rings details\n")
        sections.append(
            f"Capacity {st['capacity_per_s']} conferences/s = {st['max_rps']} requests/s / "
            f"{sum(st['requests_per_conference'].values())} requests per conference "
            f"({st['requests_per_conference']}); {st['warmup_seconds']} s of warm-up, then "
            f"{st['seconds']} s measured, per pass.\n"
        )
        for pct, load in ring["loads"].items():
            for order, p in load["passes"].items():
                sections.append(
                    f"- **{pct} %, {order}** ({p['offered_per_s']}/s offered): {p['posted']} "
                    f"conferences posted, {p['measured']} measured (generator "
                    f"{p['generator']}); statuses {p['statuses']}; 202 → first dial ms "
                    f"{p['answer_202_to_first_dial_ms']}; 202 → accept ms "
                    f"{p['answer_202_to_accept_ms']}; accept → first dial ms "
                    f"{p['accept_to_first_dial_ms']}; polls per conference "
                    f"{p['polls_per_conference']}; 202 → final ms {p['answer_202_to_final_ms']}; "
                    f"accept → final ms {p['accept_to_final_ms']}; provider requests per "
                    f"conference {p['provider_requests_by_endpoint_per_conference']}, refusals "
                    f"{p['provider_refusals']}, at most "
                    f"{p['provider_peak_requests_in_1s']['calendar_second']} in a calendar second "
                    f"and {p['provider_peak_requests_in_1s']['sliding_1s']} in any 1 s window; "
                    f"budget queue {p['budget_queue']}; `provider_budget_exhausted` lines "
                    f"{p['provider_budget_exhausted_lines']}; warnings and errors "
                    f"{p['worker_log_problems'] or 'none'}; worker CPU {p['worker_cpu_s']} s."
                )
        sections.append("")
    sched = results.get("schedule")
    if sched:
        sections.append("### Poll schedule details\n")
        for label in sched["labels"]:
            s = sched["sizes"][label]
            sections += [
                f"- **{label}** ({s['in_flight']:,} in flight, {s['due']:,} due; loaded "
                f"in {s['load_seconds']} s): {s['claim']['claims']} claims of "
                f"{s['claim']['batch']}, ms {s['claim']['latency_ms']}; the dialer's claim "
                f"finding nothing, ms {s['dialer_idle_claim']['latency_ms']}; claim + save "
                f"{s['polls']['polls_per_s']:,.0f} polls/s (rounds "
                f"{s['polls']['polls_per_s_by_round']}); real worker "
                f"{s['worker']['polls_per_s']:,.0f} polls/s, RSS start/peak/end "
                f"{s['worker']['rss_mb_start']}/{s['worker']['rss_mb_peak']}/"
                f"{s['worker']['rss_mb_end']} MB, CPU {s['worker']['worker_cpu_share']:.0%}.",
            ]
        large = sched["labels"][1]
        sections += [
            f"\nPlan of the claim statement at {large} (EXPLAIN ANALYZE, rolled back):\n",
            "```",
            *sched["sizes"][large]["plan"],
            "```\n",
            f"Plan of the dialer's claim at {large} when nothing is to dial (statuses "
            "accepted, dialing):\n",
            "```",
            *sched["sizes"][large]["dialer_idle_plan"],
            "```\n",
        ]
    sections.append("## Profiles (py-spy)\n")
    sections.append(_profile_section("api under wrk saturation", _get(ing or {}, "profile")))
    sections.append(
        _profile_section(
            "worker draining the pipeline", _get(results, "pipeline", "profiled", "profile")
        )
    )
    if sched:
        large = sched["labels"][1]
        sections.append(
            _profile_section(
                f"worker polling at {large} in flight",
                _get(sched, "sizes", large, "worker", "profile"),
            )
        )
    sections += [
        "## Changes and what they measured\n",
        CHANGES,
        "## How it is measured\n",
        METHOD,
        "## How to reproduce\n",
        REPRODUCE,
        "## Recent runs\n",
        _history(results_dir) + "\n",
    ]
    return "\n".join(sections)


METHOD = """\
Each run creates its own databases (`conference_bench_<run>_*`, migrated with
`python -m service migrate`) and Kafka topics (`*.bench-<run>-*`, 3 partitions) on the local
stack, starts real processes (`python -m service api|worker`, the simulator app), talks only to
127.0.0.1, and drops the databases and topics at the end. Every loop is bounded in time.

1. **Ingress** — one `api` process (`API_TOKENS=bench:bench-token`, JSON logs at INFO as in
   production, default pool of 10). Saturation: `wrk -t1 -c64` with `bench/post.lua` (POST
   /v1/conferences, a unique `Idempotency-Key` per request, the bearer token); accepted
   commands/s = 2xx answers per second (each 202 means the key is in Postgres and the command
   is acknowledged by Kafka with acks=all). Fixed rate: wrk cannot hold a fixed rate and wrk2
   is not in Debian, so `bench/openloop.py` sends at exactly 1,000 req/s in an open loop
   (uvloop + httptools, keep-alive connections opened on demand) and measures latency from
   each request's *scheduled* time, so stalls are not hidden (no coordinated omission). It is
   a Python process sharing the 2 cores with the api, Postgres and Kafka: its CPU share and
   its send lag are reported. Baseline: `bench/bare_app.py`, a bare Starlette endpoint that
   reads the body and answers 202, served by the same uvicorn settings as the api
   (`uvicorn.Server` in `uvloop.run`, http=httptools, no access log, lifespan off), loaded by
   the same tools in the same run.
2. **Pipeline** — N conferences of 2 participants are POSTed to a real api (each gets its 202,
   so each command is on the topic), the api is stopped, and only then one `worker` is started:
   the worker drains a pre-loaded backlog, so the figure is the worker's. The provider is the
   simulator (`bench/simulator.py`: the same app as `python -m service simulator`, access log
   off) at zero latency, time scale 60, scenario `bench/scenario.json` (answered, ring 2 s, talk
   5 s simulated: each call lasts 133 ms, so both dials find the room open; "provider refusals"
   counts any answer that is not 2xx). Worker timings are the production ones divided by the
   time scale (as tests/e2e does); `TOTALVOICE_MAX_RPS` is raised to 10,000 so that the
   client-side rate limit (20/s by default, per worker) is not what is measured. settled/s = N /
   (last `finalized_at` - first `accepted_at`); provider requests from the simulator's
   `/_simulator/ledger`; 202 → final event from the Kafka timestamp of each conference's final
   event on the events topic; 202 → first dial from each conference's 202 (taken on the
   client's monotonic clock, turned into wall time from one anchor) to the `received_at` of
   its first `POST /conferencia/{id}` in the simulator's `/_simulator/requests` log, the
   provider id read from `conference.provider_conference_id`. Both 202 figures include the
   wait for the worker's start, because of the pre-loading: the live figure is the budget
   phase's. The simulator keeps its latest 10,000 requests (no flag raises it); a run whose
   dials fell out of the log is measured on those still in it, and the table says on how
   many. A second, unmeasured pass is profiled.
3. **Pipeline under a provider budget** — `TOTALVOICE_MAX_RPS=5`, shared by the live workers
   (the paced budget: every provider request has its send time booked at the worker's share),
   once with 1 worker and once with 3, each configuration with its own database, topics,
   simulator (`bench/scenario-budget.json`: the pipeline's calls, webhooks on,
   `auto_end_conference` false so that a late dial still finds its room open) and api, to
   which the simulator's `chamada_fim` and `conferencia` webhooks are registered
   (`WEBHOOKS_ENABLED=true`, so that polls are a safety net). Worker timings are production
   ones / 60 and `CLAIM_LEASE_SECONDS=10`, so that the burst spans several leases and the
   claim limit (what the budget serves in half a lease) is exercised. Nothing is pre-loaded:
   once every worker has logged `provider_budget_shared` with the configuration's worker
   count (waited for, not slept), a burst of 72 conferences of 1, 2 and 3 participants in
   turn is POSTed (32 in flight). settled/s = N / (last `finalized_at` - first 202); the
   budget's ideal = rate / (provider requests per conference), the requests counted from the
   simulator's ledger (the bench's two webhook registrations left out), i.e. the rate at which
   the budget could serve exactly the requests the run needed; ratio = settled/s / ideal.
   Dial resolutions per participant: `dial_resolved_as_placed` and
   `dial_resolved_as_not_placed` lines in the worker logs, cross-checked with
   `conference_dial_resolutions_total` scraped from each worker's `METRICS_PORT`. Also
   reported: the most provider requests received in one calendar second and in any sliding
   1 s window (from the request log's `received_at`), the largest number of dials of one
   number, and the warnings and errors the workers logged.
4. **How soon the phone rings** (`ring`, issue 16) — ONE worker with `TOTALVOICE_MAX_RPS=20`
   against the simulator, fed an open loop of 2-participant conferences at 50 % and at 90 % of
   the budget's conference capacity, once with `TOTALVOICE_BUDGET_ORDER=urgency` (dials first,
   then creates, ends, polls) and once with `fifo` (one first-come queue: the baseline), the
   four passes in one run, the order that goes first alternating (ABBA). Polling is
   production's default, `WEBHOOKS_ENABLED=false`, so that polls are the traffic a dial
   competes with; time scale 10, every worker timing production / 10 (`POLL_FIRST_SECONDS`
   0.5, `POLL_MAX_SECONDS` 6, `CLAIM_LEASE_SECONDS` 6): a conference lives about 8 s, so each
   pass reaches its steady state, while a poll interval stays 10-120 times the budget's
   50 ms spacing. Capacity is computed from the scenario (`bench/scenario-ring.json`:
   answered, the call over 50 s simulated after its dial, `auto_end_conference` false): the
   ±20 % jittered backoff (5, 10, 20, 40 s) puts the third poll at most 42 s after the dials
   and the fourth at least 60 s after them, so a conference needs exactly 1 create + 2 dials
   + 4 polls + 1 DELETE = 8 requests, and the budget serves 20 / 8 = 2.5 conferences/s; each
   pass's ledger checks the 8 (a poll the budget delayed by more than the margin can make it
   one fewer). Each pass has its own simulator, database, topics, api and worker; once the
   worker has logged `provider_budget_shared`, conferences are POSTed at a fixed rate whatever
   the answers (request i scheduled at start + i / rate, its own task; the generator's send
   lag is reported) for 8 s of warm-up, not measured, then 32 s measured
   (40 conferences at 50 %, 72 at 90 %: at these counts p99 is the largest figure). 202 →
   first dial: from the 202 (client side, as in the pipeline phase) to the `received_at` of
   the conference's first `POST /conferencia/{id}` in the simulator's request log, split into
   202 → `accepted_at` (the command reaching the worker; it can be slightly negative, since
   the worker may accept the command before the 202 reaches the client) and `accepted_at` →
   first dial (the dialer and the budget). Polls per conference: `conference.poll_count`;
   202 → final: the 202 to `finalized_at`; both compared with the fifo pass at the same load
   (target ratio ≤ 1.1, the p50 and the p99 of 202 → final both). The budget's queue over the
   measured window: `conference_provider_budget_wait_seconds` (mean, share over 250 ms) and
   `conference_provider_budget_refused_total` scraped from the worker's `METRICS_PORT`,
   `provider_budget_exhausted` lines in its log, the most requests the simulator received in
   a calendar second.
5. **Poll schedule** — two databases, one with 10k and one with 100k conferences, each
   inserted with one `INSERT … SELECT generate_series` (status `in_progress`, `next_action_at`
   uniform over now ± 60 s, 2 dialed participants each), then `VACUUM ANALYZE`. Claim
   latency: `PostgresStore.claim_due` itself (batch 50, lease 60 s, the service's
   `open_pool`), each claimed batch put back due (untimed) so every claim finds a full batch;
   10k and 100k alternate in 3 rounds, so a burst of outside load weighs on both. The
   dialer's claim (the same SQL with statuses accepted and dialing), which every worker runs
   every 0.2 s while it has nothing to dial, is timed the same way. Polls/s:
   claim + `PostgresStore.save` per conference (gathered, as the poller does), saved due again
   so that the due set never drains, in the same alternating rounds. Worker RSS: a real worker
   process against each database and the simulator, sampled from `/proc/<pid>/status`; the
   simulator does not know those conferences, so each GET gets the provider's 404 and the
   conference is rescheduled (the claim / GET / save path of a poll that finds nothing new).
"""

REPRODUCE = """\
```sh
make bench                              # stack-up, then .venv/bin/python -m bench
.venv/bin/python -m bench --only ring   # one phase: ingress, pipeline, budget, ring, schedule
.venv/bin/python -m bench --quick       # shorter phases, for trying the harness
```

Needs the local stack (`make stack-up`) and wrk (installed with apt-get when missing). A full
run takes about 11 minutes on 2 cores and writes `bench/results/<run>.json`, the flame graphs
`bench/results/<run>-*.svg` and this file; process logs and py-spy's collapsed stacks go to
`bench/results/<run>-work/` (ignored by git). A run with `--only` or `--quick` writes
everything into its work folder and leaves this file alone. Other engineers' tests share the
machine (and some restart Postgres or Kafka): when a run fails for that reason, run it again.
"""


def write(
    results: dict[str, Any], results_dir: Path, stamp: str, complete: bool
) -> tuple[Path, Path | None]:
    """The run's JSON always; BENCHMARKS.md only from a run of every phase at full length."""
    json_path = results_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if not complete:
        return json_path, None
    md_path = ROOT / "BENCHMARKS.md"
    md_path.write_text(benchmarks_md(results, results_dir, json_path.name))
    return json_path, md_path
