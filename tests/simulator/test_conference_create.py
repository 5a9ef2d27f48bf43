"""POST /conferencia: the body is ignored, except the documented form that dials at once."""

from typing import Any

import pytest

from .conftest import Simulator, StartSimulator

SEED_CREATE_BODY = {
    "numero_destino": "4811111111",
    "url_conferencia": "http://foo.bar/conferencia.mp3",
}


@pytest.mark.parametrize(
    "body",
    [
        None,
        b"",
        b"{}",
        b'{"Numero":"","Bina":"","GravarAudio":false}',
        b'{"anything": ["goes", 1, null]}',
        b'{"numero_destino": ""}',
        b"not json at all",
        b"[1, 2]",
    ],
    ids=[
        "absent",
        "empty",
        "empty-object",
        "go-sdk",
        "unknown-keys",
        "blank-dial",
        "junk",
        "array",
    ],
)
async def test_create_ignores_bodies_that_dial_nobody(
    simulator: Simulator, body: bytes | None
) -> None:
    response = await simulator.client.post(
        "/conferencia", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200
    assert response.json() == {
        "status": 200,
        "sucesso": True,
        "motivo": 0,
        "mensagem": "conferencia criado com sucesso",
        "dados": {"id": response.json()["dados"]["id"]},
    }
    assert isinstance(response.json()["dados"]["id"], int)
    ledger = await simulator.ledger()
    assert ledger["dials"] == []
    assert [conference["calls"] for conference in ledger["conferences"]] == [[]]


async def test_each_create_allocates_a_new_integer_id(simulator: Simulator) -> None:
    first = await simulator.create_conference()
    second = await simulator.create_conference()

    assert second > first


async def test_new_conference_is_open_and_empty(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()

    conference = await simulator.conference(conference_id)

    assert conference["id"] == conference_id
    assert conference["data_termino"] is None
    assert conference["chamadas"] == []
    assert conference["data_criacao"].endswith("-03:00")


async def test_documented_create_form_dials_its_number_at_once(simulator: Simulator) -> None:
    body: dict[str, Any] = {**SEED_CREATE_BODY, "bina": "4832830151", "gravar_conferencia": True}

    response = await simulator.client.post("/conferencia", json=body)

    conference_id = response.json()["dados"]["id"]
    conference = await simulator.conference(conference_id)
    assert [call["numero"] for call in conference["chamadas"]] == ["+554811111111"]
    ledger = await simulator.ledger()
    assert ledger["dials"] == [
        {"conference_id": conference_id, "number": "+554811111111", "count": 1}
    ]
    ended = await simulator.ended(conference_id)
    assert ended["chamadas"][0]["url_gravacao"] is not None


async def test_documented_create_form_with_a_bad_number_creates_nothing(
    simulator: Simulator,
) -> None:
    response = await simulator.client.post(
        "/conferencia", json={**SEED_CREATE_BODY, "numero_destino": "123"}
    )

    assert response.status_code == 405
    assert response.json()["motivo"] == 11
    assert response.json()["mensagem"].startswith("numero_destino inválido")
    assert (await simulator.ledger())["conferences"] == []


async def test_documented_create_form_without_balance_is_402_and_creates_nothing(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator({"no_balance": True})

    response = await simulator.client.post("/conferencia", json=SEED_CREATE_BODY)

    assert response.status_code == 402
    assert response.json()["motivo"] == 9
    assert (await simulator.ledger())["conferences"] == []


async def test_plain_create_works_without_balance(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"no_balance": True})

    response = await simulator.client.post("/conferencia", json={})

    assert response.status_code == 200
