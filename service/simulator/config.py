"""How one simulator instance is set up: who may call it, how fast time runs, what it plays."""

from dataclasses import dataclass, field
from typing import Any

from service.simulator.scenario import Scenario
from service.simulator.webhooks import WebhookSend


@dataclass(frozen=True)
class SimulatorConfig:
    tokens: tuple[str, ...] = ("sim-token",)
    # Simulated seconds per real second: 60 makes a 5-minute call last 5 real seconds.
    time_scale: float = 1.0
    # None draws one at start; the health endpoint reports it so a run can be repeated.
    seed: int | None = None
    scenario: Scenario = field(default_factory=Scenario)
    # The command line's dialect flags and --max-rps: applied on top of every scenario, also one
    # put at runtime, so a lane started in a dialect stays in it ({"dialect": {...}, "max_rps"}).
    overrides: dict[str, Any] = field(default_factory=dict)
    # The account id the provider echoes as `cli` and `cliente_id`.
    client_id: int = 2150
    recording_base_url: str = "https://recordings.simulator.invalid/"
    # Added to every id: simulators that share one service database must not reuse ids, as
    # one real provider account never does.
    id_offset: int = 0
    # How webhooks are posted; None posts them over HTTP, tests pass an async function to
    # receive them in-process.
    webhook_send: WebhookSend | None = None
