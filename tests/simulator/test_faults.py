"""Injected faults: rate limits, internal errors, a gateway's HTML, latency and dial timeouts."""

import asyncio
import time

import pytest

from .conftest import StartSimulator


async def test_injected_429_is_a_rate_limit_envelope(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"errors": {"GET /conferencia/{id}": {"429": 1.0}}})
    conference_id = await simulator.create_conference()

    response = await simulator.client.get(f"/conferencia/{conference_id}")

    assert response.status_code == 429
    assert response.json() == {
        "status": 429,
        "sucesso": False,
        "motivo": 0,
        "mensagem": "limite de requisições por segundo excedido",
        "dados": None,
    }


async def test_injected_500_is_motivo_50(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"errors": {"POST /conferencia": {"500": 1.0}}})

    response = await simulator.client.post("/conferencia", json={})

    assert response.status_code == 500
    assert (response.json()["sucesso"], response.json()["motivo"]) == (False, 50)
    assert (await simulator.ledger())["conferences"] == []


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_injected_gateway_errors_answer_html_not_json(
    start_simulator: StartSimulator, status: int
) -> None:
    simulator = await start_simulator({"errors": {"DELETE /conferencia/{id}": {str(status): 1.0}}})
    conference_id = await simulator.create_conference()

    response = await simulator.client.delete(f"/conferencia/{conference_id}")

    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")
    with pytest.raises(ValueError):
        response.json()
    assert (await simulator.conference(conference_id))["data_termino"] is None


async def test_injected_fault_on_dial_places_no_call(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"errors": {"POST /conferencia/{id}": {"502": 1.0}}})
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151"}
    )

    assert response.status_code == 502
    assert (await simulator.ledger())["dials"] == []


async def test_faults_touch_only_their_endpoint(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"errors": {"GET /conferencia/{id}": {"500": 1.0}}})

    response = await simulator.client.post("/conferencia", json={})

    assert response.status_code == 200


async def test_fault_rates_mix_and_repeat_with_the_seed(start_simulator: StartSimulator) -> None:
    scenario = {"errors": {"GET /conferencia/{id}": {"429": 0.3, "500": 0.2, "503": 0.1}}}

    async def statuses(seed: int) -> list[int]:
        simulator = await start_simulator(scenario, seed=seed)
        conference_id = await simulator.create_conference()
        return [
            (await simulator.client.get(f"/conferencia/{conference_id}")).status_code
            for _ in range(200)
        ]

    first, again, other = await statuses(11), await statuses(11), await statuses(12)

    assert first == again
    assert first != other
    assert set(first) == {200, 429, 500, 503}
    assert 40 <= first.count(429) <= 80


async def test_faults_are_counted_in_the_ledger(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"errors": {"GET /conferencia/{id}": {"429": 1.0}}})
    conference_id = await simulator.create_conference()
    for _ in range(3):
        await simulator.client.get(f"/conferencia/{conference_id}")

    ledger = await simulator.ledger()

    assert ledger["requests"]["GET /conferencia/{id}"] == {"429": 3}
    assert ledger["get_count_by_conference"] == {str(conference_id): 3}


async def test_latency_delays_the_answer(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"latency_ms": {"GET /conferencia/{id}": 150}})
    conference_id = await simulator.create_conference()

    started = time.monotonic()
    await simulator.client.post("/conferencia", json={})
    fast = time.monotonic() - started
    started = time.monotonic()
    await simulator.client.get(f"/conferencia/{conference_id}")
    slow = time.monotonic() - started

    assert slow >= 0.15
    assert fast < 0.15


async def test_dial_timeout_places_the_call_but_answers_too_late(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(
        {
            "dial_timeout_rate": 1.0,
            "dial_timeout_seconds": 30,
            "rules": [{"ring_seconds": 1, "talk_seconds": 1_000_000}],
        }
    )
    conference_id = await simulator.create_conference()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await simulator.client.post(
                f"/conferencia/{conference_id}", json={"numero": "4832830151"}
            )

    conference = await simulator.conference(conference_id)
    assert [call["numero"] for call in conference["chamadas"]] == ["+554832830151"]
    ledger = await simulator.ledger()
    assert ledger["dials"] == [
        {"conference_id": conference_id, "number": "+554832830151", "count": 1}
    ]
    assert ledger["requests"]["POST /conferencia/{id}"] == {"499": 1}


async def test_dial_timeout_eventually_answers_200(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"dial_timeout_rate": 1.0, "dial_timeout_seconds": 0.1})
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151"}
    )

    assert response.status_code == 200


@pytest.mark.parametrize(("status", "html"), [(500, False), (502, True), (504, True)])
async def test_a_dial_can_be_placed_and_still_answered_with_a_server_error(
    start_simulator: StartSimulator, status: int, html: bool
) -> None:
    simulator = await start_simulator({"dial_errors_after_placing": {str(status): 1.0}})
    conference_id = await simulator.create_conference()

    response = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151"}
    )

    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html" if html else "application/json")
    conference = await simulator.conference(conference_id)
    assert [call["numero"] for call in conference["chamadas"]] == ["+554832830151"]
    assert (await simulator.ledger())["dials"] == [
        {"conference_id": conference_id, "number": "+554832830151", "count": 1}
    ]


async def test_a_429_after_placing_is_refused_as_a_scenario(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator()

    response = await simulator.client.put(
        "/_simulator/scenario", json={"dial_errors_after_placing": {"429": 0.5}}
    )

    assert response.status_code == 422


@pytest.mark.parametrize(("status", "motivo"), [(402, 9), (403, 40)])
async def test_account_refusals_are_injected_in_the_providers_envelope(
    start_simulator: StartSimulator, status: int, motivo: int
) -> None:
    simulator = await start_simulator({"errors": {"POST /conferencia": {str(status): 1.0}}})

    response = await simulator.client.post("/conferencia", json={})

    assert response.status_code == status
    assert (response.json()["sucesso"], response.json()["motivo"]) == (False, motivo)
    assert (await simulator.ledger())["conferences"] == []
