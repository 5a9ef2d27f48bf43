"""`make image-test`: the image built by `make image`, run as real containers against the local
stack — migrate, the simulator, the api and the worker, each from the same image, the way the
Kubernetes manifests run them (read-only root filesystem, uid 10001, a writable /tmp only).

Evidence comes from outside the containers: the database's own catalog, the simulator's ledger,
the kernel's view of each container's process (/proc/PID/status), and podman's exit codes.
Run alone (`make image-test`); `make test` leaves it out (the `image` marker)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from tests.databases import create_database, drop_database
from tests.waiting import eventually

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
PODMAN = str(ROOT / "deploy" / "image" / "podman.sh")
IMAGE = os.environ.get("IMAGE", "localhost/conference-service:dev")
SIM_TOKEN = "image-sim-token"
API_TOKEN = "image-api-token"
# How long each process may take to exit after SIGTERM: the api's API_DRAIN_SECONDS (2) plus
# uvicorn's graceful shutdown (20 s); the worker's drain (WORKER_DRAIN_SECONDS). The manifests'
# terminationGracePeriodSeconds must cover these plus the preStop pause.
DRAIN_SECONDS = {"api": 22.0, "worker": 25.0, "simulator": 10.0}
UID = 10001


def _pod_spec(manifest: str) -> dict[str, Any]:
    """The pod spec of the Deployment in deploy/k8s/base/MANIFEST."""
    documents = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / manifest).read_text())
    deployment = next(d for d in documents if d and d["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Deployment:
    """The containers of one run, their settings, and what the checks counted."""

    run: str
    env: dict[str, str]
    database_url: str
    api_url: str
    simulator_url: str
    containers: dict[str, str] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)

    def container_args(self) -> list[str]:
        # --read-only with podman's default read-only-tmpfs: /tmp, /var/tmp and /run are tmpfs,
        # as the manifests' emptyDir /tmp; everything else is the image, unwritable.
        args = ["--network", "host", "--read-only", "--tty=false"]
        for key, value in self.env.items():
            args += ["--env", f"{key}={value}"]
        return args

    def start(self, role: str, *command: str) -> str:
        name = f"conference-image-{self.run}-{role}"
        podman("run", "--detach", "--name", name, *self.container_args(), IMAGE, *command)
        self.containers[role] = name
        return name

    def logs(self, role: str) -> str:
        return podman("logs", self.containers[role], check=False).stderr[-3000:]


def _process_status(container: str) -> dict[str, str]:
    pid = podman("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


async def _answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def image() -> str:
    found = podman("image", "exists", IMAGE, check=False)
    assert found.returncode == 0, f"{IMAGE} is not built: run `make image` first"
    return IMAGE


@pytest.fixture(scope="module")
async def deployment(image: str) -> AsyncIterator[Deployment]:
    run = uuid.uuid4().hex[:8]
    admin_url = os.environ["TEST_DATABASE_URL"]
    database = f"conference_image_{run}"
    database_url = await create_database(admin_url, database)
    topics = {
        "KAFKA_COMMANDS_TOPIC": f"conference.commands.image-{run}",
        "KAFKA_EVENTS_TOPIC": f"conference.events.image-{run}",
        "KAFKA_DLQ_TOPIC": f"conference.commands.dlq.image-{run}",
    }
    subprocess.run(
        [str(ROOT / "deploy" / "local" / "kafka.sh"), "topics"],
        env={**os.environ, **topics},
        check=True,
        capture_output=True,
        timeout=120,
    )
    api_port, sim_port, metrics_port = free_port(), free_port(), free_port()
    deployment = Deployment(
        run=run,
        env={
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
            **topics,
            "KAFKA_CONSUMER_GROUP": f"conference-worker-image-{run}",
            "TOTALVOICE_BASE_URL": f"http://127.0.0.1:{sim_port}",
            "TOTALVOICE_ACCESS_TOKEN": SIM_TOKEN,
            "SIMULATOR_TOKENS": SIM_TOKEN,
            "API_TOKENS": f"image:{API_TOKEN}",
            "WEBHOOK_SECRET": "image-webhook-secret",
            "METRICS_PORT": str(metrics_port),
            "LOG_FORMAT": "json",
            # The simulator runs 30 s a second; the poll schedule is scaled to match.
            "POLL_FIRST_SECONDS": "0.2",
            "POLL_MAX_SECONDS": "2",
            "POLL_SAFETY_SECONDS": "4",
        },
        database_url=database_url,
        api_url=f"http://127.0.0.1:{api_port}",
        simulator_url=f"http://127.0.0.1:{sim_port}",
    )
    try:
        yield deployment
    finally:
        for name in deployment.containers.values():
            podman("rm", "--force", "--time", "0", name, check=False)
        await drop_database(admin_url, database)
        print(f"\nimage-test ({image}):")
        for line in deployment.checked:
            print(f"  ok  {line}")


async def test_migrate_runs_to_completion_from_the_image(deployment: Deployment) -> None:
    migrate = podman(
        "run", "--rm", *deployment.container_args(), IMAGE, "migrate", timeout=180, check=False
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    db = await asyncpg.connect(deployment.database_url)
    try:
        version = await db.fetchval("SELECT version_num FROM alembic_version")
        tables = await db.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await db.close()
    head = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("[0-9]*.py"))[-1]
    assert head.startswith(version), (version, head)
    deployment.checked.append(
        f"migrate: exit 0, schema at {version} (the newest migration, {head}), "
        f"{tables} tables and views"
    )


async def test_api_worker_and_simulator_start_and_report_ready(deployment: Deployment) -> None:
    sim_port = deployment.simulator_url.rsplit(":", 1)[1]
    api_port = deployment.api_url.rsplit(":", 1)[1]
    deployment.start(
        "simulator", "simulator", "--host", "127.0.0.1", "--port", sim_port, "--time-scale", "30"
    )
    deployment.start("api", "api", "--host", "127.0.0.1", "--port", api_port)
    deployment.start("worker", "worker")
    await eventually(
        lambda: _answers(f"{deployment.simulator_url}/_simulator/health"), 60, "the simulator"
    )
    await eventually(
        lambda: _answers(f"{deployment.api_url}/readyz"), 90, "the api's /readyz to answer 200"
    )
    metrics = f"http://127.0.0.1:{deployment.env['METRICS_PORT']}/metrics"
    await eventually(lambda: _answers(metrics), 90, "the worker's /metrics")
    # The topic descriptions are read from files the image must carry (schemas/).
    async with httpx.AsyncClient(base_url=deployment.api_url, timeout=5) as api:
        asyncapi = await api.get("/asyncapi.json")
        schema = await api.get("/schemas/conference.events.v1.json")
    assert asyncapi.status_code == 200 and asyncapi.json()["asyncapi"] == "3.0.0"
    assert schema.status_code == 200 and schema.json()["$id"] == "conference.events.v1.json"
    deployment.checked.append(
        "api /readyz 200, /asyncapi.json and /schemas/* 200, worker /metrics 200,"
        " simulator up: 3 containers from one image"
    )


async def test_a_conference_through_the_containers_is_final_and_billed(
    deployment: Deployment,
) -> None:
    numbers = ["+5548999990001", "+5511988880002"]
    async with httpx.AsyncClient(
        base_url=deployment.api_url,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=10,
    ) as api:
        created = await api.post(
            "/v1/conferences",
            json={"participants": [{"number": n} for n in numbers], "reference": "image-test"},
            headers={"Idempotency-Key": f"image-{deployment.run}"},
        )
        assert created.status_code == 202, created.text
        conference_id = created.json()["id"]

        async def final() -> dict[str, Any] | None:
            body = dict((await api.get(f"/v1/conferences/{conference_id}")).json())
            return body if body["status"] in {"completed", "failed", "unresolved"} else None

        try:
            conference = await eventually(final, 120, "the conference to be final")
        except AssertionError:
            raise AssertionError(deployment.logs("worker")) from None
    assert conference["status"] == "completed", conference

    async with httpx.AsyncClient(base_url=deployment.simulator_url, timeout=10) as sim:
        ledger = (await sim.get("/_simulator/ledger")).json()
    provider_calls = {
        call["number"]: call for conf in ledger["conferences"] for call in conf["calls"]
    }
    db = await asyncpg.connect(deployment.database_url)
    try:
        billed = await db.fetch(
            "SELECT number, billed_seconds, price FROM billing_conference_call"
            " WHERE conference_id = $1",
            uuid.UUID(conference_id),
        )
    finally:
        await db.close()
    assert len(billed) == len(numbers), billed
    for row in billed:
        call = provider_calls[row["number"]]
        assert (row["billed_seconds"], row["price"]) == (
            call["billed_seconds"],
            Decimal(call["price"]),
        ), (dict(row), call)
    dials = [d for d in ledger["dials"] if d["count"] > 0]
    assert max(d["count"] for d in dials) == 1, dials
    total = sum((r["price"] for r in billed), Decimal(0))
    deployment.checked.append(
        f"conference {conference_id}: completed; {len(billed)} billing rows equal to the "
        f"simulator's ledger (seconds and price, total {total}); {len(dials)} numbers dialed once"
    )


def test_every_process_runs_as_uid_10001_on_a_read_only_root(deployment: Deployment) -> None:
    for role, name in deployment.containers.items():
        status = _process_status(name)
        uids = status["Uid"].split()
        gids = status["Gid"].split()
        assert set(uids) == {str(UID)}, (role, uids)
        assert gids[0] != "0", (role, gids)
        assert (
            podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip()
            == "true"
        )
        write = podman(
            "exec", name, "python", "-c", "open('/app/written-by-image-test', 'w')", check=False
        )
        assert write.returncode != 0 and "Read-only file system" in write.stderr, write
        tmp = podman(
            "exec", name, "python", "-c", "open('/tmp/scratch', 'w').write('x')", check=False
        )
        assert tmp.returncode == 0, tmp.stderr
    deployment.checked.append(
        f"{len(deployment.containers)} processes run as uid {UID} (from /proc/PID/status); "
        "writing under /app fails (read-only root), /tmp is writable"
    )


def test_the_manifests_pre_stop_command_runs_in_the_image(deployment: Deployment) -> None:
    """The api's preStop hook is an exec in this image: a missing binary would fail every
    rollout's drain (the kubelet then sends SIGTERM at once)."""
    container = _pod_spec("api.yaml")["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    started = time.monotonic()
    podman("exec", deployment.containers["api"], *command, timeout=60)
    pause = time.monotonic() - started
    assert pause >= 1, pause
    deployment.checked.append(f"api preStop {command!r} runs in the image ({pause:.1f} s)")


@pytest.mark.parametrize("role", ["api", "worker", "simulator"])
def test_sigterm_exits_0_within_the_drain_time(deployment: Deployment, role: str) -> None:
    name = deployment.containers[role]
    started = time.monotonic()
    podman("kill", "--signal", "TERM", name)
    waited = podman("wait", name, timeout=DRAIN_SECONDS[role] + 15)
    elapsed = time.monotonic() - started
    code = int(waited.stdout.strip())
    assert code == 0, (code, deployment.logs(role))
    assert elapsed <= DRAIN_SECONDS[role], elapsed
    if role in ("api", "worker"):
        spec = _pod_spec(f"{role}.yaml")
        pre_stop = spec["containers"][0].get("lifecycle", {}).get("preStop", {})
        pause = float(pre_stop["exec"]["command"][-1]) if pre_stop else 0.0
        assert pause + DRAIN_SECONDS[role] < spec["terminationGracePeriodSeconds"], spec
    deployment.checked.append(
        f"{role}: SIGTERM → exit 0 after {elapsed:.1f} s (drain time {DRAIN_SECONDS[role]:.0f} s)"
    )
