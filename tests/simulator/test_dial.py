"""POST /conferencia/{id}: validating the number and placing a call into the conference."""

import pytest

from .conftest import Simulator, StartSimulator


@pytest.mark.parametrize(
    ("numero", "e164"),
    [
        ("4832830151", "+554832830151"),
        ("48999990001", "+5548999990001"),
        ("+554832830151", "+554832830151"),
        ("+5511987654321", "+5511987654321"),
        ("+14155550123", "+14155550123"),
    ],
)
async def test_dial_accepts_ddd_and_e164_and_echoes_e164(
    simulator: Simulator, numero: str, e164: str
) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(f"/conferencia/{conference_id}", json={"numero": numero})

    assert response.status_code == 200
    assert response.json()["sucesso"] is True
    call_id = response.json()["dados"]["id"]
    conference = await simulator.conference(conference_id)
    assert [(call["id"], call["numero"]) for call in conference["chamadas"]] == [(call_id, e164)]


async def test_each_dial_is_a_new_call_id(lasting_simulator: Simulator) -> None:
    simulator = lasting_simulator
    conference_id = await simulator.create_conference()

    first = await simulator.dial(conference_id, "4832830151")
    second = await simulator.dial(conference_id, "4832830152")

    assert second > first


@pytest.mark.parametrize(
    "body",
    [{}, {"numero": ""}, {"numero": None}, {"Numero": "4832830151"}, {"bina": "4832830151"}],
    ids=["empty", "blank", "null", "go-sdk-keys", "only-bina"],
)
async def test_dial_without_numero_is_405_motivo_10(
    simulator: Simulator, body: dict[str, object]
) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(f"/conferencia/{conference_id}", json=body)

    assert response.status_code == 405
    assert response.json()["motivo"] == 10
    assert response.json()["mensagem"] == "o parametro numero é obrigatório"


@pytest.mark.parametrize(
    "numero",
    [
        "123",
        "483283015",
        "483283015123",
        "(48) 3283-0151",
        "48 3283 0151",
        "04832830151",
        "4892830151x",
        "+55483283015",
        "+55 48 32830151",
        "+0123456789",
        "48832830151",
        "٤٨٣٢٨٣٠١٥١",
        True,
        ["4832830151"],
    ],
)
async def test_malformed_number_is_405_motivo_11(simulator: Simulator, numero: object) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(f"/conferencia/{conference_id}", json={"numero": numero})

    assert response.status_code == 405
    assert response.json()["motivo"] == 11
    assert response.json()["mensagem"] == "numero inválido, formato DDD + Número ex: 4832830151"
    assert (await simulator.ledger())["dials"] == []


async def test_bad_caller_id_is_405_motivo_11(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151", "bina": "12"}
    )

    assert (response.status_code, response.json()["motivo"]) == (405, 11)


@pytest.mark.parametrize("wish", [True, False, None, "true", "false"])
async def test_recording_wish_accepts_booleans_null_and_their_strings(
    simulator: Simulator, wish: object
) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}",
        json={"numero": "4832830151", "bina": None, "gravar_audio": wish},
    )

    assert response.status_code == 200
    ended = await simulator.ended(conference_id)
    recorded = ended["chamadas"][0]["url_gravacao"] is not None
    assert recorded == (wish in (True, "true"))


async def test_unreadable_recording_wish_is_405_motivo_11(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151", "gravar_audio": "sim"}
    )

    assert (response.status_code, response.json()["motivo"]) == (405, 11)


@pytest.mark.parametrize("path_id", ["999999", "abc", "-1"])
async def test_dial_into_unknown_conference_is_404_motivo_60(
    simulator: Simulator, path_id: str
) -> None:
    response = await simulator.client.post(f"/conferencia/{path_id}", json={"numero": "4832830151"})

    assert response.status_code == 404
    assert response.json()["motivo"] == 60
    assert response.json()["mensagem"] == "conferencia não encontrada"


async def test_dial_into_ended_conference_is_404_motivo_80(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()
    await simulator.client.delete(f"/conferencia/{conference_id}")

    response = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151"}
    )

    assert response.status_code == 404
    assert response.json()["motivo"] == 80
    assert (await simulator.ledger())["dials"] == []


async def test_dial_with_malformed_json_is_400_motivo_100(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}",
        content=b'{"numero": "4832830151"',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["motivo"] == 100
    assert response.json()["sucesso"] is False


async def test_dial_without_balance_is_402_motivo_9_and_places_nothing(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator({"no_balance": True})
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151"}
    )

    assert response.status_code == 402
    assert response.json() == {
        "status": 402,
        "sucesso": False,
        "motivo": 9,
        "mensagem": "saldo insuficiente",
        "dados": None,
    }
    assert (await simulator.conference(conference_id))["chamadas"] == []


async def test_dialing_the_same_number_twice_counts_two_dials(
    lasting_simulator: Simulator,
) -> None:
    simulator = lasting_simulator
    conference_id = await simulator.create_conference()
    await simulator.client.post(f"/conferencia/{conference_id}", json={"numero": "4832830151"})
    await simulator.client.post(f"/conferencia/{conference_id}", json={"numero": "+554832830151"})

    ledger = await simulator.ledger()

    assert ledger["dials"] == [
        {"conference_id": conference_id, "number": "+554832830151", "count": 2}
    ]
