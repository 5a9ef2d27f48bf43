"""The /_simulator control API: ledger, request log, scenario, reset and after-the-fact changes."""

from datetime import datetime

import pytest

from service.simulator.clock import SAO_PAULO

from .conftest import Simulator, StartSimulator


async def test_health_reports_seed_and_time_scale(simulator: Simulator) -> None:
    response = await simulator.client.get("/_simulator/health", headers={"Access-Token": ""})

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "seed": 7, "time_scale": 1000.0}


async def test_ledger_counts_requests_dials_and_gets(lasting_simulator: Simulator) -> None:
    simulator = lasting_simulator
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")
    await simulator.dial(conference_id, "4832830151")
    await simulator.client.post(f"/conferencia/{conference_id}", json={"numero": "1"})
    await simulator.conference(conference_id)
    await simulator.conference(conference_id)
    await simulator.client.get("/conferencia/999999")
    await simulator.client.get("/conferencia/1", headers={"Access-Token": "wrong"})

    ledger = await simulator.ledger()

    assert ledger["requests"] == {
        "POST /conferencia": {"200": 1},
        "POST /conferencia/{id}": {"200": 2, "405": 1},
        "GET /conferencia/{id}": {"200": 2, "403": 1, "404": 1},
    }
    assert ledger["dials"] == [
        {"conference_id": conference_id, "number": "+554832830151", "count": 2}
    ]
    assert ledger["get_count_by_conference"] == {str(conference_id): 2, "999999": 1}
    [conference] = ledger["conferences"]
    assert conference["id"] == conference_id
    assert conference["created_by_control"] is False
    assert conference["ended_at"] is None
    assert datetime.fromisoformat(conference["created_at"]).utcoffset() == SAO_PAULO.utcoffset(None)
    assert [call["number"] for call in conference["calls"]] == ["+554832830151"] * 2


async def test_requests_lists_the_latest_requests(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()
    await simulator.client.post(f"/conferencia/{conference_id}", json={"numero": "12"})
    await simulator.client.get("/conferencia/relatorio?data_inicio=2024-01-01&data_fim=x")

    response = await simulator.client.get("/_simulator/requests", params={"limit": "2"})

    dial, report = response.json()
    assert {key: dial[key] for key in ("method", "path", "endpoint", "status")} == {
        "method": "POST",
        "path": f"/conferencia/{conference_id}",
        "endpoint": "POST /conferencia/{id}",
        "status": 405,
    }
    assert (dial["conference_id"], dial["body"]) == (conference_id, {"numero": "12"})
    assert (report["query"], report["status"], report["conference_id"]) == (
        "data_inicio=2024-01-01&data_fim=x",
        405,
        None,
    )
    first = (await simulator.client.get("/_simulator/requests")).json()[0]
    assert (first["endpoint"], first["conference_id"]) == ("POST /conferencia", conference_id)


async def test_requests_refuses_a_bad_limit(simulator: Simulator) -> None:
    response = await simulator.client.get("/_simulator/requests", params={"limit": "0"})

    assert response.status_code == 422


async def test_scenario_can_be_read_and_replaced(simulator: Simulator) -> None:
    scenario = {
        "rules": [{"match": "^\\+5548", "status": "ocupado", "ring_seconds": 9}],
        "tariffs": {"fixo": "0.0725"},
        "errors": {"GET /conferencia/{id}": {"429": 0.5}},
        "latency_ms": {"default": 1},
    }

    replaced = await simulator.client.put("/_simulator/scenario", json=scenario)
    read = await simulator.client.get("/_simulator/scenario")

    assert replaced.status_code == 200
    assert read.json() == replaced.json()
    assert read.json()["tariffs"] == {"fixo": "0.0725", "movel": "0.35"}
    assert read.json()["rules"][0]["status"] == "ocupado"
    assert read.json()["messy"] is True


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"rules": [{"match": "("}]}',
        b'{"rules": [{"status": "talvez"}]}',
        b'{"errors": {"GET /conferencia/{id}": {"429": 0.7, "500": 0.7}}}',
        b'{"errors": {"GET /chamada/{id}": {"429": 0.1}}}',
        b'{"errors": {"GET /conferencia/{id}": {"418": 0.1}}}',
        b'{"tariffs": {"fixo": "caro"}}',
        b'{"messsy": false}',
    ],
    ids=[
        "not-json",
        "bad-regex",
        "bad-status",
        "rates-over-1",
        "bad-endpoint",
        "bad-fault",
        "bad-price",
        "typo",
    ],
)
async def test_invalid_scenario_is_422_and_changes_nothing(
    simulator: Simulator, body: bytes
) -> None:
    before = (await simulator.client.get("/_simulator/scenario")).json()

    response = await simulator.client.put("/_simulator/scenario", content=body)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid body"
    assert response.json()["details"]
    assert (await simulator.client.get("/_simulator/scenario")).json() == before


async def test_reset_forgets_everything_but_keeps_ids_growing(simulator: Simulator) -> None:
    first = await simulator.create_conference()
    await simulator.client.put("/webhook/chamada_fim", json={"url": "http://a.test/x"})

    response = await simulator.client.post("/_simulator/reset")

    assert response.status_code == 200
    ledger = await simulator.ledger()
    assert ledger == {
        "requests": {},
        "dials": [],
        "conferences": [],
        "get_count_by_conference": {},
    }
    assert (await simulator.client.get("/webhook")).json()["dados"]["webhooks"] == []
    assert (await simulator.client.get(f"/conferencia/{first}")).status_code == 404
    assert await simulator.create_conference() > first


async def test_patching_a_finished_call_changes_what_the_provider_reports(
    simulator: Simulator,
) -> None:
    conference_id = await simulator.create_conference()
    call_id = await simulator.dial(conference_id, "4832830151")
    await simulator.ended(conference_id)

    response = await simulator.client.patch(
        f"/_simulator/calls/{call_id}",
        json={"price": "0.47", "billed_seconds": 180, "duration_seconds": 200, "talk_seconds": 170},
    )

    assert response.status_code == 200
    assert response.json() == {
        "id": call_id,
        "number": "+554832830151",
        "status": "atendida",
        "duration_seconds": 200,
        "billed_seconds": 180,
        "talk_seconds": 170,
        "price": "0.47",
        "recording_url": None,
        "created_by_control": False,
    }
    call = (await simulator.conference(conference_id))["chamadas"][0]
    assert (call["duracao"], call["duracao_cobrada"], call["duracao_falada"], call["preco"]) == (
        "00:03:20",
        "00:03:00",
        "00:02:50",
        0.47,
    )


async def test_patching_null_restores_the_computed_value(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()
    call_id = await simulator.dial(conference_id, "4832830151")
    await simulator.ended(conference_id)
    await simulator.client.patch(f"/_simulator/calls/{call_id}", json={"price": "9.99"})

    response = await simulator.client.patch(f"/_simulator/calls/{call_id}", json={"price": None})

    assert response.json()["price"] == "0.12"


async def test_patching_a_call_in_progress_is_409(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"rules": [{"ring_seconds": 1_000_000}]})
    conference_id = await simulator.create_conference()
    call_id = await simulator.dial(conference_id, "4832830151")

    response = await simulator.client.patch(f"/_simulator/calls/{call_id}", json={"price": "1"})

    assert response.status_code == 409


@pytest.mark.parametrize(
    "body", [{"price": "-1"}, {"billed_seconds": -60}, {"preco": "1"}, {"price": "muito"}]
)
async def test_patching_with_a_bad_body_is_422(simulator: Simulator, body: dict[str, str]) -> None:
    conference_id = await simulator.create_conference()
    call_id = await simulator.dial(conference_id, "4832830151")
    await simulator.ended(conference_id)

    response = await simulator.client.patch(f"/_simulator/calls/{call_id}", json=body)

    assert response.status_code == 422


async def test_patching_an_unknown_call_is_404(simulator: Simulator) -> None:
    response = await simulator.client.patch("/_simulator/calls/1", json={"price": "1"})

    assert response.status_code == 404


async def test_finished_conference_nobody_created_shows_in_the_report(
    simulator: Simulator,
) -> None:
    response = await simulator.client.post(
        "/_simulator/conferences",
        json={
            "calls": [
                {"number": "4832830151", "talk_seconds": 61, "record": True},
                {"number": "+5548999990001", "status": "sem resposta", "ring_seconds": 30},
                {"number": "4832830152", "talk_seconds": 10, "price": "0.50"},
            ]
        },
    )

    assert response.status_code == 201
    created = response.json()
    assert created["created_by_control"] is True
    assert created["ended_at"] is not None
    assert [
        (call["status"], call["billed_seconds"], call["price"], call["created_by_control"])
        for call in created["calls"]
    ] == [
        ("atendida", 120, "0.24", True),
        ("sem resposta", None, "0.00", True),
        ("atendida", 60, "0.50", True),
    ]
    today = simulator.today()
    report = (
        await simulator.client.get(
            "/conferencia/relatorio", params={"data_inicio": today, "data_fim": today}
        )
    ).json()["dados"]["relatorio"]
    assert [entry["id"] for entry in report] == [created["id"]]
    assert report[0]["data_termino"] is not None
    assert [call["duracao"] for call in report[0]["chamadas"]] == [
        "00:01:04",
        "00:00:30",
        "00:00:13",
    ]
    assert (await simulator.ledger())["dials"] == []


async def test_finished_call_added_to_a_known_conference(lasting_simulator: Simulator) -> None:
    simulator = lasting_simulator
    conference_id = await simulator.create_conference()
    dialed = await simulator.dial(conference_id, "4832830151")

    response = await simulator.client.post(
        f"/_simulator/conferences/{conference_id}/calls",
        json={"number": "48999990009", "talk_seconds": 125},
    )

    assert response.status_code == 201
    added = response.json()
    assert (added["billed_seconds"], added["price"], added["created_by_control"]) == (
        180,
        "1.05",
        True,
    )
    calls = (await simulator.conference(conference_id))["chamadas"]
    assert [call["id"] for call in calls] == [dialed, added["id"]]
    assert calls[1]["status"] == "atendida"
    assert calls[1]["duracao_cobrada"] == "00:03:00"
    assert [dial["count"] for dial in (await simulator.ledger())["dials"]] == [1]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/_simulator/conferences/1/calls", {"number": "4832830151"}, 404),
        ("/_simulator/conferences", {"calls": [{"number": "12"}]}, 422),
        ("/_simulator/conferences", {"calls": [{"number": "4832830151", "status": "x"}]}, 422),
        ("/_simulator/conferences", {"chamadas": []}, 422),
    ],
)
async def test_bad_control_requests_are_refused(
    simulator: Simulator, path: str, body: dict[str, object], status: int
) -> None:
    response = await simulator.client.post(path, json=body)

    assert response.status_code == status


async def test_requests_show_the_path_as_the_client_sent_it(simulator: Simulator) -> None:
    await simulator.client.post("/conferencia/", json={})

    [received] = (await simulator.client.get("/_simulator/requests")).json()

    assert (received["path"], received["endpoint"]) == ("/conferencia/", "POST /conferencia")
