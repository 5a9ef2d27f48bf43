"""Real processes (`python -m service …`) against the local stack's Postgres and Kafka and the
provider simulator, all talking over real sockets. `make test` starts the stack first.

A *lane* is one isolated deployment: its own database, topics, consumer group, simulator, api
and workers. Tests that need another configuration open their own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.databases import create_database, drop_database, migrate
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "e2e-token"
SIM_TOKEN = "e2e-sim-token"
WEBHOOK_SECRET = "e2e-webhook-secret"


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test`, which starts the stack")
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int | None = None

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Base:
    """What every lane shares: the database server, the broker, a log folder."""

    admin_database_url: str
    kafka: str
    log_dir: Path


@dataclass
class Lane:
    base: Base
    database_url: str
    env: dict[str, str]
    commands_topic: str
    events_topic: str
    dlq_topic: str
    api_url: str
    simulator_url: str
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def kafka(self) -> str:
        return self.base.kafka

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)

    def start(self, name: str, *args: str, **env: str) -> ServiceProcess:
        log_path = self.base.log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "service", *args],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        started = ServiceProcess(name, process, log_path)
        self.processes.append(started)
        return started

    async def ready(self, worker: ServiceProcess) -> None:
        """Wait until the worker has opened its connections and taken up its loops."""

        async def started() -> bool:
            return '"worker_started"' in worker.log()

        await eventually(started, 60, "the worker to start")

    def start_worker(self, *args: str, **env: str) -> ServiceProcess:
        port = free_port()
        worker = self.start("worker", "worker", *args, METRICS_PORT=str(port), **env)
        worker.metrics_port = port
        return worker

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )

    def simulator(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.simulator_url, timeout=10)

    async def register_webhooks(self) -> None:
        url = f"{self.api_url}/v1/webhooks/totalvoice/{WEBHOOK_SECRET}"
        async with httpx.AsyncClient(
            base_url=self.simulator_url, headers={"Access-Token": SIM_TOKEN}
        ) as sim:
            for name in ("chamada_fim", "conferencia"):
                response = await sim.put(f"/webhook/{name}", json={"url": url})
                assert response.status_code == 200, response.text

    async def close(self) -> list[tuple[str, int]]:
        """Stop every process, newest first, and drop the lane's database; the processes that
        did not exit cleanly, with their exit codes."""
        unclean = [(p.name, code) for p in reversed(self.processes) if (code := p.stop()) != 0]
        name = self.database_url.rsplit("/", 1)[1]
        await drop_database(self.base.admin_database_url, name)
        return unclean


@pytest.fixture(scope="session")
async def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    database_url = _required("TEST_DATABASE_URL")
    kafka = _required("KAFKA_BOOTSTRAP_SERVERS")
    return Base(database_url, kafka, tmp_path_factory.mktemp("logs"))


async def _fresh_database(base: Base, name: str) -> str:
    """A new, migrated database: each lane is one deployment, and deployments never share."""
    url = await create_database(base.admin_database_url, name)
    migrate(url)
    return url


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


LaneFactory = Callable[..., Awaitable[Lane]]


async def open_lane(
    base: Base,
    time_scale: float = 30,
    workers: int = 1,
    simulator_args: tuple[str, ...] = (),
    **settings: str,
) -> Lane:
    """Topics, then the simulator, the api and the workers, each waited for with a deadline."""
    run = uuid.uuid4().hex[:8]
    topics = {
        "commands": f"conference.commands.e2e-{run}",
        "events": f"conference.events.e2e-{run}",
        "dlq": f"conference.commands.dlq.e2e-{run}",
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics.values()]
        )
    finally:
        await admin.close()
    database_url = await _fresh_database(base, f"conference_e2e_{run}")
    api_port, sim_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOTALVOICE_"))},
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": base.kafka,
        "KAFKA_COMMANDS_TOPIC": topics["commands"],
        "KAFKA_EVENTS_TOPIC": topics["events"],
        "KAFKA_DLQ_TOPIC": topics["dlq"],
        "KAFKA_CONSUMER_GROUP": f"conference-worker-e2e-{run}",
        "TOTALVOICE_BASE_URL": f"http://127.0.0.1:{sim_port}",
        "TOTALVOICE_ACCESS_TOKEN": SIM_TOKEN,
        "TOTALVOICE_MAX_RPS": "1000",
        "API_TOKENS": f"e2e:{API_TOKEN},other:other-token",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        # Production timings divided by the simulator's time scale.
        "POLL_FIRST_SECONDS": str(5 / time_scale),
        "POLL_MAX_SECONDS": str(60 / time_scale),
        "POLL_SAFETY_SECONDS": str(120 / time_scale),
        "DIAL_GRACE_SECONDS": "3",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        # A step cut short by a crash or a dependency's restart resumes when its lease ends.
        "CLAIM_LEASE_SECONDS": "8",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        # Lanes load-test one caller; the per-caller limits have their own lane (test_security).
        "CALLER_RATE_LIMIT_PER_SECOND": "100000",
        "CALLER_RATE_LIMIT_BURST": "100000",
        "CALLER_PARTICIPANTS_PER_MINUTE": "10000000",
        **settings,
    }
    lane = Lane(
        base=base,
        database_url=database_url,
        env=env,
        commands_topic=topics["commands"],
        events_topic=topics["events"],
        dlq_topic=topics["dlq"],
        api_url=f"http://127.0.0.1:{api_port}",
        simulator_url=f"http://127.0.0.1:{sim_port}",
    )
    lane.start(
        "simulator",
        "simulator",
        "--port",
        str(sim_port),
        "--token",
        SIM_TOKEN,
        "--time-scale",
        str(time_scale),
        "--seed",
        "7",
        "--id-offset",
        str(int(run, 16) % 10**6 * 10**6),
        *simulator_args,
    )
    await eventually(
        lambda: _healthy(f"{lane.simulator_url}/_simulator/health"), 30, "the simulator"
    )
    lane.start("api", "api", "--port", str(api_port))
    await eventually(lambda: _healthy(f"{lane.api_url}/readyz"), 60, "the api to be ready")
    for _ in range(workers):
        lane.start_worker()
    return lane


@pytest.fixture(scope="session")
async def lane(base: Base) -> AsyncIterator[Lane]:
    """The default lane, shared by the tests that need nothing special."""
    default = await open_lane(base)
    yield default
    unclean = await default.close()
    assert not unclean, unclean


@pytest.fixture
async def db(lane: Lane) -> AsyncIterator[asyncpg.Connection]:
    """The default lane's database."""
    connection = await lane.connect()
    yield connection
    await connection.close()


@pytest.fixture
async def sim(lane: Lane) -> AsyncIterator[httpx.AsyncClient]:
    async with lane.simulator() as client:
        yield client


@pytest.fixture
async def client(lane: Lane) -> AsyncIterator[httpx.AsyncClient]:
    async with lane.api() as client:
        yield client


def ledger_calls(ledger: dict[str, Any], provider_conference_id: str) -> list[dict[str, Any]]:
    [conference] = [c for c in ledger["conferences"] if str(c["id"]) == provider_conference_id]
    return list(conference["calls"])
