"""DELETE /conferencia/{id}: closing the room hangs up every call still in progress."""

import pytest

from .conftest import Simulator, StartSimulator


@pytest.fixture
async def slow_calls(start_simulator: StartSimulator) -> Simulator:
    return await start_simulator(
        {
            "messy": False,
            "rules": [
                {"match": "^\\+554830000001$", "ring_seconds": 10_000},
                {"match": "^\\+554830000002$", "ring_seconds": 1, "talk_seconds": 100_000},
                {"match": "^\\+554830000003$", "status": "ocupado", "ring_seconds": 10_000},
            ],
        },
        # Slow enough that a minute of talk (0.6 s) cannot pass between two requests.
        time_scale=100.0,
    )


async def test_delete_answers_200_with_no_data(slow_calls: Simulator) -> None:
    conference_id = await slow_calls.create_conference()

    response = await slow_calls.client.delete(f"/conferencia/{conference_id}")

    assert response.status_code == 200
    assert response.json()["sucesso"] is True
    assert response.json()["dados"] is None
    assert (await slow_calls.conference(conference_id))["data_termino"] is not None


async def test_delete_cancels_ringing_calls_and_settles_talking_ones(slow_calls: Simulator) -> None:
    conference_id = await slow_calls.create_conference()
    await slow_calls.dial(conference_id, "4830000001")
    await slow_calls.dial(conference_id, "4830000002", gravar_audio=True)
    await slow_calls.dial(conference_id, "4830000003")
    await slow_calls.conference_when(
        conference_id, lambda seen: seen["chamadas"][1]["status"] == "atendida"
    )

    await slow_calls.client.delete(f"/conferencia/{conference_id}")

    conference = await slow_calls.conference(conference_id)
    ringing, talking, busy_later = conference["chamadas"]
    assert conference["data_termino"] is not None
    assert (ringing["status"], ringing["preco"], ringing["duracao_cobrada"]) == (
        "cancelada",
        0,
        None,
    )
    assert ringing["duracao"] is not None
    assert busy_later["status"] == "cancelada"
    assert talking["status"] == "atendida"
    assert talking["duracao_falada"] is not None
    assert talking["duracao_cobrada"] == "00:01:00"
    assert talking["preco"] == 0.12
    assert talking["url_gravacao"] is not None
    [ledger_conference] = (await slow_calls.ledger())["conferences"]
    talked = ledger_conference["calls"][1]
    assert 0 <= talked["talk_seconds"] < 60
    assert talked["duration_seconds"] == talked["talk_seconds"] + 1


async def test_delete_leaves_finished_calls_as_they_were(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator(
        {
            "messy": False,
            "auto_end_conference": False,
            "rules": [{"status": "ocupado", "ring_seconds": 2}],
        }
    )
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")
    await simulator.conference_when(
        conference_id, lambda seen: seen["chamadas"][0]["status"] == "ocupado"
    )

    await simulator.client.delete(f"/conferencia/{conference_id}")

    call = (await simulator.conference(conference_id))["chamadas"][0]
    assert (call["status"], call["duracao"]) == ("ocupado", "00:00:02")


async def test_deleting_twice_is_404_motivo_80(slow_calls: Simulator) -> None:
    conference_id = await slow_calls.create_conference()
    await slow_calls.client.delete(f"/conferencia/{conference_id}")

    response = await slow_calls.client.delete(f"/conferencia/{conference_id}")

    assert response.status_code == 404
    assert response.json()["motivo"] == 80
    assert response.json()["mensagem"] == "a conferencia não está ativa"


async def test_deleting_an_auto_ended_conference_is_404_motivo_80(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")
    await simulator.ended(conference_id)

    response = await simulator.client.delete(f"/conferencia/{conference_id}")

    assert (response.status_code, response.json()["motivo"]) == (404, 80)


async def test_deleting_an_unknown_conference_is_404_motivo_60(simulator: Simulator) -> None:
    response = await simulator.client.delete("/conferencia/123456789")

    assert response.status_code == 404
    assert response.json()["motivo"] == 60


async def test_get_unknown_conference_is_404_motivo_60(simulator: Simulator) -> None:
    response = await simulator.client.get("/conferencia/123456789")

    assert response.status_code == 404
    assert response.json() == {
        "status": 404,
        "sucesso": False,
        "motivo": 60,
        "mensagem": "conferencia não encontrada",
        "dados": None,
    }
