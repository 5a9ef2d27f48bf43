"""A simulator per test, driven in-process, with a webhook receiver and deadline-bound waits."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig
from service.simulator.scenario import Scenario
from service.simulator.simulation import Simulation

TOKEN = "test-token"
WAIT_SECONDS = 5.0
Seen = TypeVar("Seen")


@dataclass
class Simulator:
    client: httpx.AsyncClient
    simulation: Simulation
    webhook_posts: list[dict[str, Any]] = field(default_factory=list)

    async def create_conference(self) -> int:
        response = await self.client.post("/conferencia", json={})
        assert response.status_code == 200, response.text
        conference_id: int = response.json()["dados"]["id"]
        return conference_id

    async def dial(self, conference_id: int, numero: str, **fields: Any) -> int:
        response = await self.client.post(
            f"/conferencia/{conference_id}", json={"numero": numero, **fields}
        )
        assert response.status_code == 200, response.text
        call_id: int = response.json()["dados"]["id"]
        return call_id

    async def conference(self, conference_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/conferencia/{conference_id}")
        assert response.status_code == 200, response.text
        dados: dict[str, Any] = response.json()["dados"]
        return dados

    async def conference_when(
        self, conference_id: int, condition: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        return await eventually(lambda: self.conference(conference_id), condition)

    async def ended(self, conference_id: int) -> dict[str, Any]:
        return await self.conference_when(
            conference_id, lambda seen: seen["data_termino"] is not None
        )

    async def webhooks_when(
        self, condition: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        async def posted() -> list[dict[str, Any]]:
            return list(self.webhook_posts)

        return await eventually(posted, condition)

    async def deliveries_when(
        self, condition: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        async def delivered() -> list[dict[str, Any]]:
            deliveries: list[dict[str, Any]] = (
                await self.client.get("/_simulator/deliveries")
            ).json()
            return deliveries

        return await eventually(delivered, condition)

    def today(self) -> str:
        """The simulated day in Sao Paulo, which the scaled clock keeps behind the real one."""
        clock = self.simulation.clock
        return clock.wall_at(clock.now()).date().isoformat()

    async def ledger(self) -> dict[str, Any]:
        response = await self.client.get("/_simulator/ledger")
        assert response.status_code == 200
        ledger: dict[str, Any] = response.json()
        return ledger


StartSimulator = Callable[..., Awaitable[Simulator]]


async def eventually(
    probe: Callable[[], Awaitable[Seen]], condition: Callable[[Seen], bool]
) -> Seen:
    """Probes until `condition` holds, failing at the deadline with what was seen last."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        seen = await probe()
        if condition(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition never held; last seen: {seen!r}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    started: list[Simulator] = []

    async def start(
        scenario: dict[str, Any] | None = None,
        *,
        time_scale: float = 1000.0,
        seed: int = 7,
        webhook_reply: Callable[[], int] | None = None,
    ) -> Simulator:
        posts: list[dict[str, Any]] = []

        # The simulator's WebhookSend: records each post, answers 204 or what `webhook_reply`
        # returns (or raises, as a receiver that cannot be reached would).
        async def receive_webhook(url: str, body: bytes) -> int:
            posts.append({"url": url, "json": orjson.loads(body)})
            return 204 if webhook_reply is None else webhook_reply()

        config = SimulatorConfig(
            tokens=(TOKEN,),
            time_scale=time_scale,
            seed=seed,
            scenario=Scenario.model_validate(scenario or {}),
            webhook_send=receive_webhook,
        )
        app = create_app(config)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://simulator.test",
            headers={"Access-Token": TOKEN},
        )
        simulator = Simulator(client, app.state.simulation, posts)
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        await simulator.client.aclose()
        await simulator.simulation.aclose()


@pytest.fixture
async def simulator(start_simulator: StartSimulator) -> Simulator:
    return await start_simulator({"messy": False})


@pytest.fixture
async def lasting_simulator(start_simulator: StartSimulator) -> Simulator:
    """Conferences stay open when their calls end, so several dials never race an auto-end."""
    return await start_simulator({"messy": False, "dialect": {"room_end": "on_delete"}})
