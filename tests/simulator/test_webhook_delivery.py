"""Webhooks posted when calls join, leave and end: late, lost, doubled or reordered on demand."""

from typing import Any

from aiohttp import web

from service.simulator.webhooks import AiohttpSend

from .conftest import Simulator, StartSimulator

HOOK = "http://service.test/v1/webhooks/totalvoice/secret"


async def _register(simulator: Simulator, *names: str) -> None:
    for name in names:
        response = await simulator.client.put(f"/webhook/{name}", json={"url": HOOK})
        assert response.status_code == 200


def _attempted(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [delivery for delivery in deliveries if delivery["url"] is not None]


def _kinds(posts: list[dict[str, Any]]) -> list[str]:
    return [post["json"].get("evento_conferencia", "fim") for post in posts]


async def test_answered_call_posts_joined_left_and_call_end(simulator: Simulator) -> None:
    await _register(simulator, "conferencia", "chamada_fim")
    conference_id = await simulator.create_conference()
    call_id = await simulator.dial(conference_id, "48999990001", gravar_audio=True)

    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 3)

    assert _kinds(posts) == ["Entrou", "Saiu", "fim"]
    assert {post["url"] for post in posts} == {HOOK}
    joined = posts[0]["json"]
    assert joined == {
        "data_criacao": joined["data_criacao"],
        "evento_conferencia": "Entrou",
        "numero": "+5548999990001",
        "gravar_audio": True,
        "conferencia_id": conference_id,
        "chamada_id": str(call_id),
        "cliente_id": 2150,
    }
    assert "+" not in joined["data_criacao"]
    assert not joined["data_criacao"].endswith("Z")
    end = posts[2]["json"]
    assert end["id"] == call_id
    assert end["conferencia_id"] == conference_id
    assert (end["ativa"], end["status_geral"]) == (False, "finalizada")
    assert end["url_gravacao"] is not None
    assert end["destino"] == {
        "data_inicio": end["destino"]["data_inicio"],
        "numero": "+5548999990001",
        "tipo": "movel",
        "status": "atendida",
        "duracao_segundos": 23,
        "duracao": "00:00:23",
        "duracao_cobrada_segundos": 60,
        "duracao_cobrada": "00:01:00",
        "duracao_falada_segundos": 20,
        "duracao_falada": "00:00:20",
        "preco": 0.35,
        "motivo_desconexao": "16. normal",
    }


async def test_unanswered_call_posts_only_its_end(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"rules": [{"status": "ocupado", "ring_seconds": 2}]})
    await _register(simulator, "conferencia", "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")
    await simulator.ended(conference_id)

    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 1)

    assert _kinds(posts) == ["fim"]
    destino = posts[0]["json"]["destino"]
    assert (destino["status"], destino["preco"], destino["motivo_desconexao"]) == (
        "ocupado",
        0,
        "17. ocupado",
    )
    assert destino["duracao_cobrada_segundos"] is None


async def test_hang_up_by_delete_posts_left_and_end_at_once(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator({"rules": [{"ring_seconds": 1, "talk_seconds": 1_000_000}]})
    await _register(simulator, "conferencia", "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")
    await simulator.webhooks_when(lambda posts: len(posts) >= 1)

    await simulator.client.delete(f"/conferencia/{conference_id}")

    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 3)
    assert _kinds(posts) == ["Entrou", "Saiu", "fim"]


async def test_events_without_a_registered_url_are_skipped(simulator: Simulator) -> None:
    await _register(simulator, "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    deliveries = await simulator.deliveries_when(
        lambda deliveries: any(delivery["outcome"] == "delivered" for delivery in deliveries)
    )

    assert [(delivery["webhook"], delivery["outcome"]) for delivery in deliveries] == [
        ("conferencia", "skipped: no url registered"),
        ("conferencia", "skipped: no url registered"),
        ("chamada_fim", "delivered"),
    ]
    assert _kinds(simulator.webhook_posts) == ["fim"]


async def test_lost_webhooks_are_never_posted(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"webhooks": {"loss_rate": 1.0}})
    await _register(simulator, "conferencia", "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    await simulator.ended(conference_id)

    deliveries = await simulator.deliveries_when(lambda deliveries: len(deliveries) >= 3)

    assert [d["outcome"] for d in deliveries] == ["lost"] * 3
    assert simulator.webhook_posts == []


async def test_duplicated_webhooks_arrive_twice(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"webhooks": {"duplicate_rate": 1.0, "delay_ms": 0}})
    await _register(simulator, "conferencia", "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 6)

    assert _kinds(posts) == ["Entrou", "Entrou", "Saiu", "Saiu", "fim", "fim"]


async def test_reordered_webhooks_all_arrive(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"webhooks": {"reorder": True, "delay_ms": 30}}, seed=3)
    await _register(simulator, "conferencia", "chamada_fim")
    conference_id = await simulator.create_conference()
    for number in ("4832830151", "4832830152", "4832830153"):
        await simulator.dial(conference_id, number)

    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 9)

    assert sorted(_kinds(posts)) == sorted(["Entrou", "Saiu", "fim"] * 3)


async def test_disabled_webhooks_post_nothing(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"webhooks": {"enabled": False}})
    await _register(simulator, "conferencia", "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    deliveries = await simulator.deliveries_when(lambda deliveries: len(deliveries) >= 3)

    assert {delivery["outcome"] for delivery in deliveries} == {"skipped: webhooks disabled"}
    assert simulator.webhook_posts == []


async def test_failing_receiver_is_recorded_and_changes_nothing(
    start_simulator: StartSimulator,
) -> None:
    def refuse() -> int:
        raise ConnectionRefusedError("connection refused")

    simulator = await start_simulator({"messy": False}, webhook_reply=refuse)
    await _register(simulator, "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")
    await simulator.webhooks_when(lambda posts: len(posts) >= 1)

    later = await simulator.create_conference()
    await simulator.dial(later, "4832830151")
    await simulator.webhooks_when(lambda posts: len(posts) >= 2)

    deliveries = await simulator.deliveries_when(
        lambda deliveries: len(_attempted(deliveries)) >= 2
    )
    assert [delivery["outcome"].split(":")[0] for delivery in _attempted(deliveries)] == [
        "failed",
        "failed",
    ]
    assert (await simulator.ended(later))["chamadas"][0]["status"] == "atendida"


async def test_receiver_error_status_is_recorded(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator(webhook_reply=lambda: 500)
    await _register(simulator, "chamada_fim")
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    deliveries = await simulator.deliveries_when(
        lambda deliveries: len(_attempted(deliveries)) >= 1
    )

    attempted = _attempted(deliveries)[0]
    assert (attempted["outcome"], attempted["response_status"]) == ("delivered", 500)


async def test_the_default_send_posts_the_body_as_json_over_http() -> None:
    """The tests above pass their own WebhookSend; this is the one a real simulator uses."""
    received: list[tuple[str, str, str, bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((request.method, request.path, request.content_type, await request.read()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/v1/webhooks/totalvoice/secret", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/webhooks/totalvoice/secret"
    send = AiohttpSend()
    try:
        statuses = [await send(url, b'{"id":1}'), await send(url, b'{"id":2}')]
    finally:
        await send.aclose()
        await runner.cleanup()

    assert statuses == [202, 202]
    assert received == [
        ("POST", "/v1/webhooks/totalvoice/secret", "application/json", b'{"id":1}'),
        ("POST", "/v1/webhooks/totalvoice/secret", "application/json", b'{"id":2}'),
    ]
