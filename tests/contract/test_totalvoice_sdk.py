"""The official Python SDK (PyPI `totalvoice` 1.7.0) against the simulator, over real sockets.

What the SDK expects of the server, and so what the simulator must meet (README, "What the SDKs
expect"): the `Access-Token` header; `POST /conferencia` with `Content-Type: application/json` and
no body at all; `GET /conferencia/{id}` and `DELETE /conferencia/{id}` with the id pasted into the
path; a dial body `{"numero", "bina": null, "gravar_audio": null}`; `PUT /webhook/{nome}` with
`{"url"}`, `GET /webhook`, `DELETE /webhook/{nome}`; the envelope on every answer, errors included
(it returns the raw body and leaves the reading to its caller).

Worked around here, never in the simulator, because they are the SDK's own bugs:
- `Cliente(token, host)` ignores `host` and always talks to the production address, so the test
  sets `cliente.host` after building it;
- `add_numero_conferencia` passes one argument too many to its private body builder and raises
  TypeError before sending anything: the test shows that, then sends what the method means to,
  with the SDK's own builder and headers.

Where the SDK and the simulator disagree the provider notes decide: the SDK's docstrings write
numbers as `DDD + Número` (4832830151) while the default dialect echoes E.164 (+554832830151),
as the 2024 docs do (notes 6.4); `--numbers national` serves the SDK's form.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from totalvoice.cliente import Cliente
from totalvoice.cliente.api.helper import utils

from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sdk-contract-token"
FINAL = {"atendida", "sem resposta", "ocupado", "congestionado", "falha", "cancelada", "não existe"}
SCENARIO = {
    "rules": [
        {"match": "0151$", "ring_seconds": 2, "talk_seconds": 45},
        {"match": "0152$", "status": "ocupado", "ring_seconds": 2},
        {"match": "0159$", "ring_seconds": 2, "talk_seconds": 100000},
    ],
}


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hooks() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service simulator` in its default dialect, the one `make run` serves."""
    port = free_port()
    scenario = tmp_path_factory.mktemp("sdk") / "scenario.json"
    scenario.write_text(json.dumps(SCENARIO))
    log = (tmp_path_factory.mktemp("sdk-log") / "simulator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "simulator", "--port", str(port), "--token", TOKEN,
         "--time-scale", "60", "--seed", "7", "--scenario", str(scenario)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/_simulator/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the simulator did not start"
        time.sleep(0.1)
    yield url
    process.terminate()
    assert process.wait(timeout=30) == 0
    log.close()


@pytest.fixture
def cliente(simulator_url: str) -> Cliente:
    sdk = Cliente(TOKEN, simulator_url)
    assert sdk.host == "https://voice-api.zenvia.com"  # the SDK ignored the host it was given
    sdk.host = simulator_url
    return sdk


def _read(raw: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(raw)
    assert set(body) >= {"status", "sucesso", "motivo", "mensagem", "dados"}, body
    return body


def _add_number(cliente: Cliente, conference_id: str, numero: str) -> dict[str, Any]:
    """What `add_numero_conferencia` means to send: its own builder, headers and path."""
    conferencia = cliente.conferencia
    with pytest.raises(TypeError):
        conferencia.add_numero_conferencia(conference_id, numero)
    data = conferencia._Conferencia__buildConferencia(numero, None, None)
    response = requests.post(
        f"{cliente.host}/conferencia/{conference_id}",
        headers=utils.build_header(cliente.access_token),
        data=data,
        timeout=10,
    )
    return _read(response.content)


def _until_final(cliente: Cliente, conference_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        dados: dict[str, Any] = _read(cliente.conferencia.get_by_id(conference_id))["dados"]
        calls = dados["chamadas"]
        if dados["data_termino"] and calls and all(c["status"] in FINAL for c in calls):
            return dados
        assert time.monotonic() < deadline, dados
        time.sleep(0.2)


def test_sdk_creates_dials_fetches_until_final_and_gets_webhooks(
    cliente: Cliente, simulator_url: str, hooks: str
) -> None:
    saved = _read(cliente.minha_conta.editar_webhook("chamada_fim", hooks))
    assert (saved["status"], saved["sucesso"], saved["dados"]) == (200, True, None)
    listed = _read(cliente.minha_conta.get_webhook())["dados"]["webhooks"]
    assert {"webhook": "chamada_fim", "url": hooks} in listed

    created = _read(cliente.conferencia.cria_conferencia())
    assert (created["status"], created["motivo"]) == (200, 0)
    conference_id = str(created["dados"]["id"])  # get_by_id pastes it into the path: a string
    answered = _add_number(cliente, conference_id, "4832830151")
    busy = _add_number(cliente, conference_id, "4832830152")
    assert answered["sucesso"] and busy["sucesso"]

    dados = _until_final(cliente, conference_id)

    assert str(dados["id"]) == conference_id
    by_number = {call["numero"]: call for call in dados["chamadas"]}
    assert set(by_number) == {"+554832830151", "+554832830152"}  # E.164: the notes decide
    assert by_number["+554832830151"]["status"] == "atendida"
    assert by_number["+554832830151"]["duracao_falada"] == "00:00:45"
    assert by_number["+554832830152"]["status"] == "ocupado"
    assert {str(call["id"]) for call in dados["chamadas"]} == {
        str(answered["dados"]["id"]),
        str(busy["dados"]["id"]),
    }
    deadline = time.monotonic() + 10
    while len(_Hooks.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {str(post["id"]) for post in _Hooks.received} == {
        str(c["id"]) for c in dados["chamadas"]
    }
    requests_seen = requests.get(f"{simulator_url}/_simulator/requests", timeout=5).json()
    assert {r["user_agent"] for r in requests_seen} == {"lib-python/1.7.0"}

    removed = _read(cliente.minha_conta.delete_webhook("chamada_fim"))
    assert removed["sucesso"] is True
    assert _read(cliente.minha_conta.get_webhook())["dados"]["webhooks"] == []


def test_sdk_deletes_a_running_conference_and_a_second_delete_is_404_motivo_80(
    cliente: Cliente,
) -> None:
    conference_id = str(_read(cliente.conferencia.cria_conferencia())["dados"]["id"])
    _add_number(cliente, conference_id, "4832830159")

    deleted = _read(cliente.conferencia.deletar(conference_id))
    again = _read(cliente.conferencia.deletar(conference_id))
    dados = _read(cliente.conferencia.get_by_id(conference_id))["dados"]

    assert (deleted["status"], deleted["sucesso"], deleted["dados"]) == (200, True, None)
    assert (again["status"], again["sucesso"], again["motivo"]) == (404, False, 80)
    assert dados["data_termino"] is not None
    assert all(call["status"] in FINAL for call in dados["chamadas"])


def test_sdk_with_a_wrong_token_gets_403_motivo_40(simulator_url: str) -> None:
    stranger = Cliente("not-the-token")
    stranger.host = simulator_url

    for raw in (stranger.conferencia.cria_conferencia(), stranger.conferencia.get_by_id("4921")):
        body = _read(raw)
        assert (body["status"], body["sucesso"], body["motivo"]) == (403, False, 40)
        assert body["mensagem"] == "access token inválido"


def test_sdk_asking_for_an_unknown_conference_gets_404_motivo_60(cliente: Cliente) -> None:
    for raw in (
        cliente.conferencia.get_by_id("999999999"),
        cliente.conferencia.deletar("999999999"),
    ):
        body = _read(raw)
        assert (body["status"], body["sucesso"], body["motivo"]) == (404, False, 60)
    dial = _add_number(cliente, "999999999", "4832830151")
    assert (dial["status"], dial["motivo"]) == (404, 60)
