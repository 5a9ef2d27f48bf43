"""GET /webhook, PUT /webhook/{nome} and DELETE /webhook/{nome}."""

import pytest

from .conftest import Simulator, StartSimulator

VALID_NAMES = "status_tempo_real, chamada_fim, envio_sms, chamada_did_fim, conferencia"


async def test_webhooks_start_empty(simulator: Simulator) -> None:
    response = await simulator.client.get("/webhook")

    assert response.status_code == 200
    assert response.json()["dados"] == {"webhooks": []}


async def test_put_registers_and_get_lists_the_webhook(simulator: Simulator) -> None:
    response = await simulator.client.put(
        "/webhook/chamada_fim", json={"url": "https://service.test/hooks/abc"}
    )

    assert response.status_code == 200
    assert response.json()["mensagem"] == "webhook atualizado com sucesso"
    assert response.json()["dados"] is None
    listed = (await simulator.client.get("/webhook")).json()["dados"]
    assert listed == {
        "webhooks": [{"webhook": "chamada_fim", "url": "https://service.test/hooks/abc"}]
    }


async def test_put_again_replaces_the_url(simulator: Simulator) -> None:
    await simulator.client.put("/webhook/conferencia", json={"url": "http://a.test/1"})
    await simulator.client.put("/webhook/conferencia", json={"url": "http://a.test/2"})

    listed = (await simulator.client.get("/webhook")).json()["dados"]["webhooks"]

    assert listed == [{"webhook": "conferencia", "url": "http://a.test/2"}]


async def test_delete_removes_the_webhook(simulator: Simulator) -> None:
    await simulator.client.put("/webhook/chamada_fim", json={"url": "http://a.test/1"})

    response = await simulator.client.delete("/webhook/chamada_fim")

    assert response.status_code == 200
    assert response.json()["mensagem"] == "webhook apagado com sucesso"
    assert (await simulator.client.get("/webhook")).json()["dados"]["webhooks"] == []


@pytest.mark.parametrize("body", [{}, {"url": ""}, {"url": None}, {"URL": "http://a.test"}])
async def test_put_without_url_is_405_motivo_10(
    simulator: Simulator, body: dict[str, object]
) -> None:
    response = await simulator.client.put("/webhook/chamada_fim", json=body)

    assert response.status_code == 405
    assert response.json()["motivo"] == 10
    assert response.json()["mensagem"] == "o parametro url é obrigatório"


@pytest.mark.parametrize("url", ["foooo.bar/x/y", "ftp://a.test/x", "http://", 42, ["http://a"]])
async def test_put_with_bad_url_is_405_motivo_11(simulator: Simulator, url: object) -> None:
    response = await simulator.client.put("/webhook/chamada_fim", json={"url": url})

    assert response.status_code == 405
    assert response.json()["motivo"] == 11
    assert response.json()["mensagem"] == (
        "o parametro url é inválido, informar ex: http://foooo.bar/x/y"
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_unknown_webhook_name_is_405_motivo_11_listing_the_valid_ones(
    simulator: Simulator, method: str
) -> None:
    response = await simulator.client.request(
        method, "/webhook/fim_de_conferencia", json={"url": "http://a.test/x"}
    )

    assert response.status_code == 405
    assert response.json()["motivo"] == 11
    assert response.json()["mensagem"] == (
        f"o parametro webhook é inválido. Webhooks válidos: {VALID_NAMES}"
    )


async def test_put_without_a_name_is_405_motivo_10(simulator: Simulator) -> None:
    response = await simulator.client.put("/webhook", json={"url": "http://a.test/x"})

    assert (response.status_code, response.json()["motivo"]) == (405, 10)
    assert response.json()["mensagem"] == "o parametro webhook é obrigatório"


async def test_valid_names_come_from_the_scenario(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"webhook_names": ["chamada_fim", "eventos_conferencia"]})

    accepted = await simulator.client.put(
        "/webhook/eventos_conferencia", json={"url": "http://a.test/x"}
    )
    refused = await simulator.client.put("/webhook/conferencia", json={"url": "http://a.test/x"})

    assert accepted.status_code == 200
    assert refused.json()["mensagem"].endswith("Webhooks válidos: chamada_fim, eventos_conferencia")
