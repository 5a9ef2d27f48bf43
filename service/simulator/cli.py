"""`python -m service simulator`: serve the simulated provider with uvicorn."""

import argparse
import os
import random
import signal
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig
from service.simulator.scenario import Scenario

_EPILOG = """\
The simulator answers the TotalVoice conference API (Access-Token header required):
  POST   /conferencia                     create (a body with numero_destino dials it at once)
  POST   /conferencia/{id}                dial {"numero", "bina", "gravar_audio"} into it
  GET    /conferencia/{id}                the conference and its calls
  DELETE /conferencia/{id}                end it
  GET    /conferencia/relatorio           ?data_inicio&data_fim[&posicao&limite]
  GET    /conferencia/chamadas/relatorio  same, one entry per call
  GET /webhook, PUT|DELETE /webhook/{nome}
Every path also answers with a trailing slash.

Scenario file (JSON, every field optional; also PUT /_simulator/scenario at runtime):
  {"rules": [{"match": "<regex searched in the E.164 number>", "status": "atendida",
              "prepare_seconds": 1, "ring_seconds": 3, "talk_seconds": 42, "tipo": "movel"}],
   "tariffs": {"fixo": "0.12", "movel": "0.35"},
   "latency_ms": {"default": 0, "POST /conferencia/{id}": 250},
   "errors": {"GET /conferencia/{id}": {"429": 0.1, "500": 0.05, "502": 0.01}},
   "dial_timeout_rate": 0.0, "dial_timeout_seconds": 30,
   "dial_errors_after_placing": {"502": 0.0},
   "no_balance": false,
   "webhooks": {"enabled": true, "delay_ms": 50, "duplicate_rate": 0.0,
                "loss_rate": 0.0, "reorder": false},
   "webhook_names": ["status_tempo_real", "chamada_fim", "envio_sms",
                     "chamada_did_fim", "conferencia"],
   "messy": true, "report_metadata": true, "auto_end_conference": true}
  The first rule that matches wins; with none, a call rings 3 s, is answered and talks 20 s.
  Final statuses: atendida, sem resposta, ocupado, congestionado, falha, cancelada, não existe.
  Endpoint keys (latency_ms, errors): "POST /conferencia", "POST /conferencia/{id}",
  "GET /conferencia/{id}", "DELETE /conferencia/{id}", "GET /conferencia/relatorio",
  "GET /conferencia/chamadas/relatorio", "GET /webhook", "PUT /webhook/{nome}",
  "DELETE /webhook/{nome}". Fault statuses: 429, 500 (JSON envelope), 502, 503, 504 (HTML).
  A dial_timeout places the call but answers only after dial_timeout_seconds (real seconds).
  dial_errors_after_placing places the call, then answers 500, 502, 503 or 504 anyway.

Control API (no token; plain JSON):
  GET    /_simulator/health                     {"status", "seed", "time_scale"}
  GET    /_simulator/ledger                     requests by endpoint and status, dials,
                                                conferences with their calls and exact prices,
                                                GET count by conference
  GET    /_simulator/requests?limit=N           the last N provider requests
  GET    /_simulator/deliveries?limit=N         the last N webhook deliveries
  GET    /_simulator/scenario                   the scenario in force
  PUT    /_simulator/scenario                   replace it (422 when invalid)
  POST   /_simulator/reset                      forget conferences, ledger, webhooks
  PATCH  /_simulator/calls/{id}                 {"price", "billed_seconds", "duration_seconds",
                                                 "talk_seconds"}: change a finished call's bill
  POST   /_simulator/conferences                {"calls": [{"number", "status", "ring_seconds",
                                                 "talk_seconds", "tipo", "record", "caller_id",
                                                 "price", "billed_seconds",
                                                 "duration_seconds"}]}: a finished conference
                                                 that nobody created through the API
  POST   /_simulator/conferences/{id}/calls     one such finished call, added to a conference
"""


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    scenario = Scenario()
    if args.scenario is not None:
        try:
            scenario = Scenario.model_validate_json(Path(args.scenario).read_bytes())
        except (OSError, ValidationError) as error:
            print(f"simulator: cannot use scenario {args.scenario}: {error}", file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    config = SimulatorConfig(
        tokens=tuple(args.token) if args.token else _tokens_from_environment(),
        time_scale=args.time_scale,
        seed=seed,
        scenario=scenario,
        id_offset=args.id_offset,
    )
    print(
        f"simulator: http://{args.host}:{args.port} seed={seed} time_scale={args.time_scale}",
        file=sys.stderr,
    )
    # uvicorn re-raises the signal that stopped it after draining; a handler of our own
    # receives it, so a SIGTERM ends the simulator with exit code 0.
    for stopping in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stopping, lambda signum, frame: None)
    uvicorn.run(create_app(config), host=args.host, port=args.port, lifespan="on")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service simulator",
        description="A local TotalVoice (Zenvia Voice) conference API: tests, demos, benchmarks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument(
        "--token",
        action="append",
        help="an accepted Access-Token, repeatable "
        "(default: $SIMULATOR_TOKENS, comma-separated, else sim-token)",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        help="simulated seconds per real second (60: a 5-minute call lasts 5 s)",
    )
    parser.add_argument("--seed", type=int, help="makes every random choice repeatable")
    parser.add_argument(
        "--id-offset",
        type=int,
        default=0,
        help="added to every conference and call id (simulators sharing one database)",
    )
    parser.add_argument("--scenario", metavar="FILE", help="a JSON scenario (format below)")
    return parser


def _tokens_from_environment() -> tuple[str, ...]:
    configured = os.environ.get("SIMULATOR_TOKENS", "")
    tokens = tuple(token.strip() for token in configured.split(",") if token.strip())
    return tokens or ("sim-token",)


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
