"""`python -m service <command>`: the one entry point of every process in the image."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from service import failpoints
from service.logging import configure_logging, get_logger
from service.settings import LogSettings, SettingsError, load

ROLES = ("dial", "poll", "relay")
# Below Kubernetes' 30 s default grace period, so the worker exits before it is killed.
WORKER_DRAIN_SECONDS = 25.0
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Conference calls through TotalVoice, from Kafka commands to an exact ledger.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    api = commands.add_parser("api", help="the HTTP ingress (Starlette on uvicorn)")
    api.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"))
    api.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8080")))
    worker = commands.add_parser(
        "worker", help="the command consumer, dialer, poller and outbox relay"
    )
    worker.add_argument(
        "--only",
        default=",".join(ROLES),
        help="comma-separated roles to run: dial (consume commands, create, dial), "
        "poll (the poll schedule), relay (the outbox); default all",
    )
    reconcile = commands.add_parser(
        "reconcile",
        help="reconcile the ledger with the provider's report for a period",
        description="Pages the provider's conference report for [FROM, TO) and makes the ledger "
        "match it. Dates are ISO dates or date-times; a date without an offset is Brasilia time. "
        "Exit code: 0 clean, 1 discrepancies found (and corrected), 2 could not run.",
    )
    period = reconcile.add_mutually_exclusive_group(required=True)
    period.add_argument("--from", dest="start", help="start of the period (inclusive)")
    period.add_argument(
        "--previous-day", action="store_true", help="yesterday, Brasilia time (for the CronJob)"
    )
    reconcile.add_argument("--to", dest="end", help="end of the period (exclusive)")
    events = commands.add_parser(
        "events",
        help="print the events on Kafka (or the dead letters), one line each, for a person",
        description="Reads every partition of KAFKA_EVENTS_TOPIC from the beginning, without a "
        "consumer group and committing nothing (nobody's offsets move), and prints one line per "
        "event: time, type, conference, sequence, a summary. Exit code: 0 done (the end offsets "
        "as they were at start, or SIGINT/SIGTERM with --follow), 2 Kafka unreachable.",
    )
    events.add_argument(
        "--follow", action="store_true", help="keep printing new messages until interrupted"
    )
    events.add_argument(
        "--conference", type=uuid.UUID, metavar="ID", help="only this conference's messages"
    )
    events.add_argument(
        "--dlq",
        action="store_true",
        help="read KAFKA_DLQ_TOPIC instead: each dead letter's reason, detail, source, key, value",
    )
    commands.add_parser("migrate", help="apply the database migrations (alembic upgrade head)")
    commands.add_parser(
        "simulator",
        help="a local TotalVoice-compatible server (see `python -m service simulator --help`)",
        add_help=False,
    )
    commands.add_parser("dev", help="simulator + api + worker in one process group, for make run")
    return parser


def main(argv: list[str]) -> int:
    if argv[:1] == ["simulator"]:
        from service.simulator.cli import main as simulator_main

        return simulator_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        logs = load(LogSettings)
        configure_logging(logs.log_level, logs.log_format)
        if args.command == "api":
            return _run(_serve_api(args.host, args.port))
        if args.command == "worker":
            roles = {r.strip() for r in args.only.split(",") if r.strip()}
            if not roles or roles - set(ROLES):
                print(f"--only takes some of {', '.join(ROLES)}", file=sys.stderr)
                return 2
            try:
                failpoints.arm(os.environ.get("FAILPOINTS"))
            except ValueError as error:
                print(f"FAILPOINTS: {error}", file=sys.stderr)
                return 2
            return _run(_run_worker(roles))
        if args.command == "events":
            # The lines are the output: logs (aiokafka's) go to stderr, beside our errors.
            configure_logging(logs.log_level, logs.log_format, stream=sys.stderr)
            return _run(_events(args))
        if args.command == "migrate":
            return _migrate()
        if args.command == "reconcile":
            return _run(_reconcile(args))
        if args.command == "dev":
            return _dev()
    except SettingsError as error:
        print(str(error), file=sys.stderr)
        return 2
    except (OSError, TimeoutError) as error:
        # Postgres or Kafka unreachable at start: one line for the operator, and the
        # orchestrator restarts us with backoff.
        print(f"cannot start {args.command}: a dependency is unreachable: {error}", file=sys.stderr)
        return 1
    return 2


def _settle_garbage_collector() -> None:
    """Once started: move what start-up made (modules, settings, pools) out of the collector's
    sight, and collect the young generation every 20,000 allocations instead of 700. Requests
    and steps make many short-lived objects and few cycles: in the api this measured 15-20 %
    less CPU per request (see BENCHMARKS.md, "Changes and what they measured")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    import uvloop

    return uvloop.run(coroutine)


async def _serve_api(host: str, port: int) -> int:
    import uvicorn

    from service import tracing
    from service.bootstrap import api_deps
    from service.entrypoints.http import create_app
    from service.entrypoints.http_server import HttpBounds, bounded_protocol
    from service.settings import ApiSettings

    class DrainingServer(uvicorn.Server):
        """On SIGTERM, /readyz turns 503 first; the server stops accepting only after
        `API_DRAIN_SECONDS`, so load balancers stop sending before connections are refused.
        In-flight requests then get uvicorn's graceful shutdown."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if deps.draining:
                super().handle_exit(sig, frame)
                return
            deps.draining = True
            log.info("api_draining", seconds=drain_seconds)
            loop.call_later(drain_seconds, super().handle_exit, sig, frame)

    log = get_logger(__name__)
    drain_seconds = float(os.environ.get("API_DRAIN_SECONDS", "2"))
    loop = asyncio.get_running_loop()
    bounds = HttpBounds.from_settings(load(ApiSettings))
    async with api_deps() as deps:
        server = DrainingServer(
            uvicorn.Config(
                tracing.traced(create_app(deps)),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                # httptools, bounded: header size, count and read time (http_server.py).
                http=bounded_protocol(bounds),
                lifespan="off",
                timeout_graceful_shutdown=20,
            )
        )

        # uvicorn re-raises the signal that stopped it once it has drained; this handler is
        # what it re-raises into, so our resources still close and the exit code is 0.
        def drain(signum: int, frame: object) -> None:
            deps.draining = True

        signal.signal(signal.SIGTERM, drain)
        signal.signal(signal.SIGINT, drain)
        _settle_garbage_collector()
        get_logger(__name__).info("api_started", host=host, port=port)
        await server.serve()
    return 0


async def _run_worker(roles: set[str]) -> int:
    from prometheus_client import start_http_server

    from service.bootstrap import worker_parts
    from service.entrypoints.housekeeping import run_housekeeping
    from service.entrypoints.relay import run_relay
    from service.entrypoints.schedule import DIALER, POLLER, run_schedule

    log = get_logger(__name__)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker_parts(roles) as parts:
        if parts.metrics_port:
            # A thread of prometheus_client's own: /metrics answers even if the loop is busy.
            start_http_server(parts.metrics_port)
        tasks: list[Coroutine[Any, Any, None]] = [
            run_housekeeping(
                parts.store,
                f"{socket.gethostname()}-{os.getpid()}",
                parts.share_budget,
                parts.retention,
                stop,
            )
        ]
        if parts.consumer is not None:
            tasks.append(parts.consumer.run(stop))
        if "dial" in roles:
            tasks.append(
                run_schedule("dialer", parts.deps, DIALER, parts.batch, stop, parts.dial_wakeup)
            )
        if "poll" in roles:
            tasks.append(run_schedule("poller", parts.deps, POLLER, parts.batch, stop))
        if parts.events is not None:
            tasks.append(run_relay(parts.store, parts.events, stop))
        _settle_garbage_collector()
        log.info("worker_started", roles=sorted(roles))
        work: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*tasks))
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            # Stop taking work; what is in hand gets a bounded time to finish. Anything cut
            # short is safe: its lease expires and another worker resumes it.
            log.info("worker_draining", seconds=WORKER_DRAIN_SECONDS)
            try:
                await asyncio.wait_for(work, WORKER_DRAIN_SECONDS)
            except TimeoutError:
                log.warning("worker_drain_timed_out")
        else:
            stopping.cancel()
            work.result()
    log.info("worker_stopped")
    return 0


async def _reconcile(args: argparse.Namespace) -> int:
    import orjson

    from service.adapters.totalvoice import BRASILIA
    from service.bootstrap import reconcile_deps
    from service.handlers import reconcile_period
    from service.ports import ProviderError

    log = get_logger(__name__)
    if args.previous_day:
        today = datetime.now(BRASILIA).replace(hour=0, minute=0, second=0, microsecond=0)
        start, end = today - timedelta(days=1), today
    else:
        try:
            start, end = _moment(args.start), _moment(args.end)
        except (TypeError, ValueError):
            print("reconcile: --from and --to take ISO dates, e.g. 2026-11-25", file=sys.stderr)
            return 2
        if end <= start:
            print("reconcile: --to must be after --from", file=sys.stderr)
            return 2
    try:
        async with reconcile_deps() as deps:
            result = await reconcile_period(deps, start, end)
    except ProviderError as error:
        log.error("reconcile_failed", error=str(error))
        return 2
    except Exception as error:
        # Postgres away, a socket error, anything else that stopped the run: "could not run",
        # which the CronJob retries. 1 means discrepancies found, and it is not retried.
        log.error("reconcile_failed", error=repr(error)[:300])
        print(f"reconcile could not run: {error!r}"[:500], file=sys.stderr)
        return 2
    log.info("reconcile_finished", run_id=result.run_id, **result.summary())
    print(
        f"reconcile run {result.run_id} [{start.isoformat()}, {end.isoformat()}): "
        f"{result.provider_conferences} provider conferences, "
        f"{len(result.discrepancies)} discrepancies {result.summary()['findings']}"
    )
    print(result.report())
    print(orjson.dumps(result.summary(), option=orjson.OPT_SORT_KEYS).decode())
    return 1 if result.discrepancies else 0


async def _events(args: argparse.Namespace) -> int:
    from service.entrypoints.watch import BrokerUnavailable, WatchOptions, watch
    from service.settings import KafkaSettings

    conference = str(args.conference) if args.conference else None
    options = WatchOptions(follow=args.follow, conference=conference, dlq=args.dlq)
    try:
        return await watch(load(KafkaSettings), options, sys.stdout)
    except BrokenPipeError:
        # The reader left (`| head`): done. Later flushes go nowhere instead of failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BrokerUnavailable as error:
        print(f"events: {error}"[:500], file=sys.stderr)
        return 2


def _moment(text: str | None) -> datetime:
    from service.adapters.totalvoice import BRASILIA

    if text is None:
        raise ValueError("missing")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=BRASILIA)


def _migrate() -> int:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    command.upgrade(config, "head")
    get_logger(__name__).info("migrated", head=True)
    return 0


def _dev() -> int:
    """Start the simulator, the api and the worker as child processes; stop all when one ends."""
    log = get_logger(__name__)
    python = sys.executable
    sim_port = os.environ.get("SIMULATOR_PORT", "18080")
    # Six simulated seconds a second: a demo call of a minute or two settles in seconds.
    time_scale = os.environ.get("SIMULATOR_TIME_SCALE", "6")
    # A restarted simulator must not hand out ids the database already holds for other
    # conferences (a real provider never reuses one).
    id_offset = str(int(time.time()) * 1000)
    simulator = [
        "simulator",
        "--port",
        sim_port,
        "--time-scale",
        time_scale,
        "--id-offset",
        id_offset,
    ]
    children = {
        "simulator": [python, "-m", "service", *simulator],
        "api": [python, "-m", "service", "api"],
        "worker": [python, "-m", "service", "worker"],
    }
    processes = {name: subprocess.Popen(cmd) for name, cmd in children.items()}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(p.poll() is None for p in processes.values()):
        time.sleep(0.2)
    for name, process in processes.items():
        if process.poll() is None:
            process.terminate()
        else:
            log.error("dev_child_exited", child=name, code=process.returncode)
    for process in processes.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
