"""Authentication, the envelope, trailing slashes and unknown paths."""

import pytest

from .conftest import Simulator


@pytest.mark.parametrize("token", [None, "", "wrong"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/conferencia"),
        ("GET", "/conferencia/1"),
        ("DELETE", "/conferencia/1"),
        ("GET", "/conferencia/relatorio?data_inicio=2024-01-01&data_fim=2024-01-02"),
        ("GET", "/webhook"),
        ("GET", "/no/such/path"),
    ],
)
async def test_missing_or_unknown_token_is_refused_with_motivo_40(
    simulator: Simulator, token: str | None, method: str, path: str
) -> None:
    request = simulator.client.build_request(method, path)
    if token is None:
        del request.headers["Access-Token"]
    else:
        request.headers["Access-Token"] = token

    response = await simulator.client.send(request)

    assert response.status_code == 403
    assert response.json() == {
        "status": 403,
        "sucesso": False,
        "motivo": 40,
        "mensagem": "access token inválido",
        "dados": None,
    }


async def test_refused_request_creates_nothing(simulator: Simulator) -> None:
    await simulator.client.post("/conferencia", headers={"Access-Token": "wrong"})

    assert (await simulator.ledger())["conferences"] == []


async def test_every_path_also_answers_with_a_trailing_slash(lasting_simulator: Simulator) -> None:
    simulator = lasting_simulator
    created = await simulator.client.post("/conferencia/")
    conference_id = created.json()["dados"]["id"]

    fetched = await simulator.client.get(f"/conferencia/{conference_id}/")
    dialed = await simulator.client.post(
        f"/conferencia/{conference_id}/", json={"numero": "4832830151"}
    )
    listed = await simulator.client.get("/webhook/")
    report = await simulator.client.get(
        "/conferencia/relatorio/", params={"data_inicio": "2020-01-01", "data_fim": "2099-01-01"}
    )
    ended = await simulator.client.delete(f"/conferencia/{conference_id}/")

    statuses = [r.status_code for r in (created, fetched, dialed, listed, report, ended)]
    assert statuses == [200] * 6


async def test_unknown_path_is_404_motivo_90(simulator: Simulator) -> None:
    response = await simulator.client.get("/audio/1")

    assert response.status_code == 404
    assert response.json()["motivo"] == 90
    assert response.json()["sucesso"] is False


async def test_method_the_path_does_not_take_is_404_motivo_90(simulator: Simulator) -> None:
    response = await simulator.client.patch("/conferencia/1", json={})

    assert (response.status_code, response.json()["motivo"]) == (404, 90)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_conference_path_without_id_asks_which_one(simulator: Simulator, method: str) -> None:
    response = await simulator.client.request(method, "/conferencia")

    assert response.status_code == 404
    assert response.json()["motivo"] == 10
    assert response.json()["mensagem"] == "qual conferencia? informar ID /conferencia/ID"


async def test_success_is_http_200_in_the_envelope(simulator: Simulator) -> None:
    response = await simulator.client.post("/conferencia")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"status", "sucesso", "motivo", "mensagem", "dados"}
    assert response.json()["status"] == 200
    assert response.json()["motivo"] == 0
