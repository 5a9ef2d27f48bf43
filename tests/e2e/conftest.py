"""Real processes (`python -m service …`) against the local stack's Postgres and Kafka and the
provider simulator, all talking over real sockets. `make test` starts the stack first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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
class Stack:
    env: dict[str, str]
    database_url: str
    commands_topic: str
    events_topic: str
    dlq_topic: str
    kafka: str
    api_url: str
    simulator_url: str
    log_dir: Path

    def start(self, name: str, *args: str, **env: str) -> ServiceProcess:
        log_path = self.log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "service", *args],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        return ServiceProcess(name, process, log_path)


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    database_url = _required("TEST_DATABASE_URL")
    kafka = _required("KAFKA_BOOTSTRAP_SERVERS")
    run = uuid.uuid4().hex[:8]
    topics = {
        "commands": f"conference.commands.e2e-{run}",
        "events": f"conference.events.e2e-{run}",
        "dlq": f"conference.commands.dlq.e2e-{run}",
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics.values()]
        )
    finally:
        await admin.close()

    api_port, sim_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOTALVOICE_"))},
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_COMMANDS_TOPIC": topics["commands"],
        "KAFKA_EVENTS_TOPIC": topics["events"],
        "KAFKA_DLQ_TOPIC": topics["dlq"],
        "KAFKA_CONSUMER_GROUP": f"conference-worker-e2e-{run}",
        "TOTALVOICE_BASE_URL": f"http://127.0.0.1:{sim_port}",
        "TOTALVOICE_ACCESS_TOKEN": SIM_TOKEN,
        "TOTALVOICE_MAX_RPS": "500",
        "API_TOKENS": f"e2e:{API_TOKEN},other:other-token",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "POLL_FIRST_SECONDS": "0.5",
        "POLL_MAX_SECONDS": "2",
        "DIAL_GRACE_SECONDS": "3",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "service", "migrate"], cwd=ROOT, env=env, capture_output=True
    )
    assert migrate.returncode == 0, migrate.stderr.decode()
    yield Stack(
        env=env,
        database_url=database_url,
        commands_topic=topics["commands"],
        events_topic=topics["events"],
        dlq_topic=topics["dlq"],
        kafka=kafka,
        api_url=f"http://127.0.0.1:{api_port}",
        simulator_url=f"http://127.0.0.1:{sim_port}",
        log_dir=tmp_path_factory.mktemp("logs"),
    )


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
async def simulator(stack: Stack) -> AsyncIterator[ServiceProcess]:
    port = stack.simulator_url.rsplit(":", 1)[1]
    process = stack.start(
        "simulator",
        "simulator",
        "--port",
        port,
        "--token",
        SIM_TOKEN,
        "--time-scale",
        "30",
        "--seed",
        "7",
    )
    await eventually(
        lambda: _healthy(f"{stack.simulator_url}/_simulator/health"), 30, "the simulator"
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
async def api(stack: Stack, simulator: ServiceProcess) -> AsyncIterator[ServiceProcess]:
    port = stack.api_url.rsplit(":", 1)[1]
    process = stack.start("api", "api", "--port", port)
    await eventually(lambda: _healthy(f"{stack.api_url}/readyz"), 60, "the api to be ready")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture(scope="session")
async def worker(stack: Stack, api: ServiceProcess) -> AsyncIterator[ServiceProcess]:
    process = stack.start("worker", "worker")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(stack.database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def sim(stack: Stack, simulator: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=10) as client:
        yield client


@pytest.fixture
async def client(
    stack: Stack, api: ServiceProcess, worker: ServiceProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.api_url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as client:
        yield client


def ledger_calls(ledger: dict[str, Any], provider_conference_id: str) -> list[dict[str, Any]]:
    [conference] = [c for c in ledger["conferences"] if str(c["id"]) == provider_conference_id]
    return list(conference["calls"])
