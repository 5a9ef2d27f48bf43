"""`python -m service simulator`: serve the simulated provider with uvicorn."""

import argparse
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any, get_args

import uvicorn
from pydantic import ValidationError

from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig
from service.simulator.dialect import Dialect
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
   "messy": true, "report_metadata": true, "max_rps": null,
   "dialect": {"numbers": "e164", "get_shape": "object", "dial_id": "same",
               "room_end": "auto", "webhook_conference_id": "included", "ids": "mixed",
               "prices": "number", "price_decimals": 2, "billed_minute": "mixed",
               "timestamps": "offset", "clock": "scaled"}}
  "auto_end_conference": false is the old name of "dialect": {"room_end": "on_delete"}.
  Each dialect key has the flag of the same name (below the options); a flag given on the
  command line wins over the scenario, also over one put at runtime.
  The first rule that matches wins; with none, a call rings 3 s, is answered and talks 20 s.
  Final statuses: atendida, sem resposta, ocupado, congestionado, falha, cancelada, não existe.
  Endpoint keys (latency_ms, errors): "POST /conferencia", "POST /conferencia/{id}",
  "GET /conferencia/{id}", "DELETE /conferencia/{id}", "GET /conferencia/relatorio",
  "GET /conferencia/chamadas/relatorio", "GET /webhook", "PUT /webhook/{nome}",
  "DELETE /webhook/{nome}". Fault statuses: 402 (no balance), 403 (bad token), 429,
  500 (JSON envelope), 502, 503, 504 (HTML).
  A dial_timeout places the call but answers only after dial_timeout_seconds (real seconds).
  dial_errors_after_placing places the call, then answers 500, 502, 503 or 504 anyway.

Dialects (the provider's undocumented choices; the defaults are what `make run` serves):
  --numbers        e164: +554832830151 | national: 4832830151 (the seed's examples)
                   | digits55: 554832830151. Any form is accepted on input.
  --get-shape      object: the "Objeto Conferência" with chamadas[] | flat: the docs' audio-like
                   GET example (numero_destino, duracao_segundos, ...) of the most recent call
                   only, with no call id, no data_termino, no url_gravacao; earlier calls show in
                   the reports and webhooks | mixed: object or flat, drawn per conference.
  --dial-id        same: POST /conferencia/{id} answers chamadas[].id | different: another id
                   (10^15 + the call's id) | absent: "dados": null.
  --room-end       auto: the room closes at its last hang-up (later dials and DELETE: 404/80)
                   | on_delete: it stays open until DELETE.
  --webhook-conference-id  included | omitted: conferencia_id in the chamada_fim payload.
  --ids            mixed: as the docs (create/dial answers and chamada_fim numbers, GET ids
                   sometimes strings when messy, chamada_id in conference events a string)
                   | number: every id a number | string: every id a string.
  --prices         number: "preco" a JSON number | string: "preco" a decimal string.
  --price-decimals 2: default tariffs 0.12 fixo, 0.35 movel | 6: 0.071234 and 0.351789. A price
                   is the tariff times the billed minutes, exact; scenario tariffs win.
  --billed-minute  mixed (drawn when messy) | 00:01:00 | 00:00:60 (the conference docs' form).
  --timestamps     offset: 2024-05-01T12:00:00-03:00 | naive: the same Sao Paulo time, no offset.
                   Conference events never carry an offset (as documented).
  --clock          scaled: timestamps advance time-scale seconds per real second, as durations
                   do, so data_inicio + duracao = the end; they start (time-scale - 1) * 600 s
                   in the past, so they stay behind real time for the first 10 real minutes
                   | real: real timestamps with scaled durations (a 79 s call in an 8 s window).
  --max-rps N      the account's requests per real second (a bucket per token, one second of
                   burst); above it, 429 motivo 0 in the envelope. Default: no limit.

Control API (no token; plain JSON):
  GET    /_simulator/health                     {"status", "seed", "time_scale"}
  GET    /_simulator/ledger                     requests by endpoint and status, dials,
                                                conferences with their calls and exact prices,
                                                GET count by conference
  GET    /_simulator/requests?limit=N           the last N provider requests: received_at,
                                                endpoint, status, conference_id, number (E.164),
                                                call_id, body, user_agent
  GET    /_simulator/deliveries?limit=N         the last N webhook deliveries
  GET    /_simulator/scenario                   the scenario in force
  PUT    /_simulator/scenario                   replace it (422 when invalid)
  POST   /_simulator/reset                      forget conferences, ledger, webhooks
  PUT    /_simulator/calls/{id}/reported-status
                                                {"status": "preparando"|"chamando"|"atendida"|
                                                null}: report that status for a call in progress
                                                (the provider correcting itself once it is null)
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
        overrides=_overrides(args),
        id_offset=args.id_offset,
    )
    try:
        in_force = scenario.with_overrides(config.overrides)
    except ValidationError as error:
        print(f"simulator: cannot use these settings: {error}", file=sys.stderr)
        return 2
    dialect = " ".join(f"{k}={v}" for k, v in in_force.dialect.model_dump().items())
    print(
        f"simulator: http://{args.host}:{args.port} seed={seed} time_scale={args.time_scale} "
        f"max_rps={in_force.max_rps} {dialect}",
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
    dialect = parser.add_argument_group("dialect (see Dialects below; default: the scenario's)")
    for key, info in Dialect.model_fields.items():
        values = get_args(info.annotation)
        dialect.add_argument(
            f"--{key.replace('_', '-')}",
            dest=f"dialect_{key}",
            choices=values,
            type=type(values[0]),
            help=f"default {info.default}",
        )
    parser.add_argument(
        "--max-rps",
        type=_positive_float,
        help="the provider's per-account request rate; above it 429 (default: no limit)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    dialect = {
        key: value
        for key in Dialect.model_fields
        if (value := getattr(args, f"dialect_{key}")) is not None
    }
    overrides: dict[str, Any] = {"dialect": dialect} if dialect else {}
    if args.max_rps is not None:
        overrides["max_rps"] = args.max_rps
    return overrides


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
