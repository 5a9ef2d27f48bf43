"""The provider simulator for the benchmark: the very app `python -m service simulator` serves
(service.simulator.app.create_app, same scenario, time scale and seed), with uvicorn's access log
off and warnings only, so that the stand-in provider does not spend a core on log lines while it
serves hundreds of requests a second. Nothing of its behaviour changes.

    python bench/simulator.py --port P --token T --time-scale 60 --seed 7 --scenario FILE
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import uvicorn
import uvloop

from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig
from service.simulator.scenario import Scenario


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenario", type=Path)
    args = parser.parse_args()
    scenario = (
        Scenario.model_validate_json(args.scenario.read_bytes()) if args.scenario else Scenario()
    )
    config = SimulatorConfig(
        tokens=(args.token,), time_scale=args.time_scale, seed=args.seed, scenario=scenario
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host="127.0.0.1",
            port=args.port,
            http="httptools",
            access_log=False,
            log_level="warning",
            lifespan="on",
        )
    )
    for stopping in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stopping, lambda signum, frame: None)
    uvloop.run(server.serve())


if __name__ == "__main__":
    main()
