"""What the benchmark runs against: its own databases and topics on the local stack, and real
service processes (`python -m service …`) started the way tests/e2e/conftest.py starts them.

Everything here talks to 127.0.0.1 only, and everything it creates carries the run id, so a run
never touches another engineer's database, topics or consumer groups.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# Local, throw-away credentials of the benchmark's own processes.
API_TOKEN = "bench-token"  # noqa: S105
SIM_TOKEN = "bench-sim-token"  # noqa: S105
WEBHOOK_SECRET = "bench-webhook-secret"  # noqa: S105


def admin_database_url() -> str:
    return os.environ.get(
        "DATABASE_URL", "postgresql://conference:conference@127.0.0.1:15432/conference"
    )


def kafka_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far, from /proc (0 once it has exited)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_bytes(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes, from /proc/<pid>/status."""
        values = {"VmRSS": 0, "VmHWM": 0}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0]) * 1024
        except OSError:
            pass
        return values["VmRSS"], values["VmHWM"]


@dataclass
class Run:
    """One benchmark run: its id, where its logs go, and what it started (stopped at the end)."""

    run_id: str
    stamp: str
    results_dir: Path
    log_dir: Path
    processes: list[Proc] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        proc = Proc(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def start_service(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        return self.start(name, [sys.executable, "-m", "service", *args], env)

    def stop(self, proc: Proc) -> int:
        code = proc.stop()
        if proc in self.processes:
            self.processes.remove(proc)
        return code

    def stop_all(self) -> None:
        for proc in reversed(list(self.processes)):
            self.stop(proc)

    # --- databases -----------------------------------------------------------------------

    async def fresh_database(self, suffix: str) -> str:
        """A new database on the stack's server, migrated with `python -m service migrate`."""
        name = f"conference_bench_{self.run_id}_{suffix}"
        admin = await connect_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.databases.append(name)
        url = admin_database_url().rsplit("/", 1)[0] + f"/{name}"
        migrate = subprocess.run(  # noqa: ASYNC221 (a few seconds, nothing else to do meanwhile)
            [sys.executable, "-m", "service", "migrate"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "console"},
            capture_output=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrate.stderr.decode()[-2000:]}")
        return url

    async def drop_databases(self) -> None:
        admin = await connect_admin()
        try:
            for name in self.databases:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        self.databases.clear()

    # --- topics --------------------------------------------------------------------------

    async def fresh_topics(self, lane: str) -> dict[str, str]:
        topics = {
            "commands": f"conference.commands.bench-{self.run_id}-{lane}",
            "events": f"conference.events.bench-{self.run_id}-{lane}",
            "dlq": f"conference.commands.dlq.bench-{self.run_id}-{lane}",
        }
        admin = await kafka_admin()
        try:
            await admin.create_topics(
                [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics.values()]
            )
        finally:
            await admin.close()
        self.topics.extend(topics.values())
        topics["group"] = f"conference-worker-bench-{self.run_id}-{lane}"
        return topics

    async def delete_topics(self) -> None:
        if not self.topics:
            return
        admin = await kafka_admin()
        try:
            await admin.delete_topics(self.topics)
        finally:
            await admin.close()
        self.topics.clear()


async def connect_admin(timeout: float = 60) -> asyncpg.Connection:
    """A connection to the stack's server, retried for a while: the shared server may be
    restarting (other engineers' failure tests restart it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncpg.connect(admin_database_url(), timeout=5)
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def wait_stack(timeout: float = 90) -> None:
    """Postgres and Kafka both answer (each retried up to `timeout`)."""
    connection = await connect_admin(timeout)
    await connection.close()
    admin = await kafka_admin(timeout)
    await admin.close()


async def kafka_admin(timeout: float = 60) -> AIOKafkaAdminClient:
    """An admin client, retried for a while: the shared broker may be restarting (other
    engineers' failure tests restart it)."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap())
        try:
            await admin.start()
            return admin
        except KafkaConnectionError:
            await admin.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


def service_env(database_url: str, topics: dict[str, str], **settings: str) -> dict[str, str]:
    """The environment of one service process: the caller's, minus any Kafka or provider
    setting it had, plus this lane's."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOTALVOICE_"))}
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(),
        "KAFKA_COMMANDS_TOPIC": topics["commands"],
        "KAFKA_EVENTS_TOPIC": topics["events"],
        "KAFKA_DLQ_TOPIC": topics["dlq"],
        "KAFKA_CONSUMER_GROUP": topics["group"],
        "TOTALVOICE_ACCESS_TOKEN": SIM_TOKEN,
        "API_TOKENS": f"bench:{API_TOKEN}",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "METRICS_PORT": "0",
        # The api's per-caller admission budgets (service/entrypoints/limits.py) are a policy
        # for callers, not a capacity: raised far out of the way so that the benchmark measures
        # what one process can do. The limiter still runs on every request.
        "CALLER_RATE_LIMIT_PER_SECOND": "1000000",
        "CALLER_RATE_LIMIT_BURST": "1000000",
        "CALLER_PARTICIPANTS_PER_MINUTE": "100000000",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **settings,
    }


async def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    """Until `url` answers 200; fails early if `proc` exits."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} exited: see {proc.log_path}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


def start_simulator(run: Run, name: str, scenario: Path, time_scale: float) -> tuple[Proc, str]:
    """The provider simulator (the same app as `python -m service simulator`), quiet: see
    bench/simulator.py."""
    port = free_port()
    proc = run.start(
        name,
        [
            sys.executable,
            str(BENCH / "simulator.py"),
            "--port",
            str(port),
            "--token",
            SIM_TOKEN,
            "--time-scale",
            str(time_scale),
            "--seed",
            "7",
            "--scenario",
            str(scenario),
        ],
        {**os.environ},
    )
    return proc, f"http://127.0.0.1:{port}"
