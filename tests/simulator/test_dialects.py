"""Each dialect setting, value by value: what the simulator answers and posts in it."""

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from service.simulator.dialect import DIFFERENT_DIAL_ID_OFFSET

from .conftest import Simulator, StartSimulator, eventually

HOOK = "http://service.test/v1/webhooks/totalvoice/secret"
# Rings 1 s and talks 30 s; a second number is busy.
QUICK = [
    {"match": "0151$", "ring_seconds": 1, "talk_seconds": 30},
    {"match": "0152$", "status": "ocupado", "ring_seconds": 1},
]


async def _start(start_simulator: StartSimulator, **dialect: Any) -> Simulator:
    return await start_simulator({"messy": False, "rules": QUICK, "dialect": dialect})


async def _dial(simulator: Simulator, conference_id: int | str, numero: str) -> dict[str, Any]:
    response = await simulator.client.post(f"/conferencia/{conference_id}", json={"numero": numero})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _settled_call(simulator: Simulator, **dialect: Any) -> tuple[int, dict[str, Any]]:
    """One answered call, ended; the conference id and its GET `dados`."""
    conference_id = await simulator.create_conference()
    await _dial(simulator, conference_id, "4832830151")
    dados = await simulator.conference_when(
        conference_id, lambda seen: seen["chamadas"][0]["duracao"] is not None
    )
    return conference_id, dados


async def _call_end_payload(simulator: Simulator) -> dict[str, Any]:
    response = await simulator.client.put("/webhook/chamada_fim", json={"url": HOOK})
    assert response.status_code == 200
    conference_id = await simulator.create_conference()
    await _dial(simulator, conference_id, "4832830151")
    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 1)
    payload: dict[str, Any] = posts[0]["json"]
    return payload


@pytest.mark.parametrize(
    ("form", "echoed"),
    [("e164", "+554832830151"), ("national", "4832830151"), ("digits55", "554832830151")],
)
@pytest.mark.parametrize("dialed", ["4832830151", "+554832830151"])
async def test_numbers_are_echoed_in_the_dialects_form(
    start_simulator: StartSimulator, form: str, echoed: str, dialed: str
) -> None:
    simulator = await _start(start_simulator, numbers=form)
    for name in ("chamada_fim", "conferencia"):
        await simulator.client.put(f"/webhook/{name}", json={"url": HOOK})
    conference_id = await simulator.create_conference()
    await _dial(simulator, conference_id, dialed)

    dados = await simulator.conference(conference_id)
    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 3)

    assert dados["chamadas"][0]["numero"] == echoed
    assert {
        post["json"].get("numero", post["json"].get("destino", {}).get("numero")) for post in posts
    } == {echoed}
    [dial] = [
        r
        for r in (await simulator.client.get("/_simulator/requests")).json()
        if r["endpoint"] == "POST /conferencia/{id}"
    ]
    assert dial["number"] == "+554832830151"


async def test_foreign_numbers_stay_e164_in_the_national_form(
    start_simulator: StartSimulator,
) -> None:
    simulator = await _start(start_simulator, numbers="national")
    conference_id = await simulator.create_conference()
    await _dial(simulator, conference_id, "+14155550123")

    assert (await simulator.conference(conference_id))["chamadas"][0]["numero"] == "+14155550123"


async def test_object_shape_lists_every_call(start_simulator: StartSimulator) -> None:
    simulator = await _start(start_simulator, get_shape="object", room_end="on_delete")
    conference_id = await simulator.create_conference()
    await _dial(simulator, conference_id, "4832830151")
    await _dial(simulator, conference_id, "4832830152")

    dados = await simulator.conference(conference_id)

    assert set(dados) == {"id", "data_criacao", "data_termino", "chamadas"}
    assert [call["numero"] for call in dados["chamadas"]] == ["+554832830151", "+554832830152"]


async def test_flat_shape_is_the_docs_example_of_the_most_recent_call(
    start_simulator: StartSimulator,
) -> None:
    simulator = await _start(start_simulator, get_shape="flat", room_end="on_delete")
    conference_id = await simulator.create_conference()
    empty = await simulator.conference(conference_id)
    await _dial(simulator, conference_id, "4832830151")
    await _dial(simulator, conference_id, "4832830152")

    dados = await simulator.conference_when(
        conference_id, lambda seen: seen["duracao_segundos"] is not None
    )

    assert set(empty) == {"id", "data_criacao"}
    assert empty["id"] == conference_id
    assert set(dados) == {
        "id", "numero_destino", "data_criacao", "data_inicio", "tipo", "status",
        "duracao_segundos", "duracao", "duracao_cobrada_segundos", "duracao_cobrada",
        "duracao_falada_segundos", "duracao_falada", "preco", "url_conferencia",
        "resposta_usuario", "resposta",
    }  # fmt: skip
    assert (dados["id"], dados["numero_destino"], dados["status"]) == (
        conference_id,
        "+554832830152",
        "ocupado",
    )
    assert dados["preco"] == 0.0


async def test_mixed_shape_draws_object_or_flat_per_conference(
    start_simulator: StartSimulator,
) -> None:
    simulator = await _start(start_simulator, get_shape="mixed")
    ids = [await simulator.create_conference() for _ in range(12)]
    for conference_id in ids:
        await _dial(simulator, conference_id, "4832830151")

    first = [await simulator.conference(conference_id) for conference_id in ids]
    again = [await simulator.conference(conference_id) for conference_id in ids]

    assert {"chamadas" in dados for dados in first} == {True, False}
    assert ["chamadas" in dados for dados in first] == ["chamadas" in dados for dados in again]


@pytest.mark.parametrize("dial_id", ["same", "different", "absent"])
async def test_dial_answer_id_by_dialect(start_simulator: StartSimulator, dial_id: str) -> None:
    simulator = await _start(start_simulator, dial_id=dial_id)
    conference_id = await simulator.create_conference()

    answer = await _dial(simulator, conference_id, "4832830151")

    [call] = (await simulator.conference(conference_id))["chamadas"]
    if dial_id == "same":
        assert answer["dados"] == {"id": call["id"]}
    elif dial_id == "different":
        assert answer["dados"] == {"id": call["id"] + DIFFERENT_DIAL_ID_OFFSET}
    else:
        assert answer["dados"] is None
    [logged] = [
        r
        for r in (await simulator.client.get("/_simulator/requests")).json()
        if r["endpoint"] == "POST /conferencia/{id}"
    ]
    assert (logged["conference_id"], logged["call_id"]) == (conference_id, call["id"])


async def test_auto_room_end_closes_at_the_last_hang_up(start_simulator: StartSimulator) -> None:
    simulator = await _start(start_simulator, room_end="auto")
    conference_id, _ = await _settled_call(simulator)

    dados = await simulator.ended(conference_id)
    late = await simulator.client.post(
        f"/conferencia/{conference_id}", json={"numero": "4832830151"}
    )
    delete = await simulator.client.delete(f"/conferencia/{conference_id}")

    assert dados["data_termino"] is not None
    assert (late.status_code, late.json()["motivo"]) == (404, 80)
    assert (delete.status_code, delete.json()["motivo"]) == (404, 80)


async def test_on_delete_room_end_stays_open_until_delete(start_simulator: StartSimulator) -> None:
    simulator = await _start(start_simulator, room_end="on_delete")
    conference_id, dados = await _settled_call(simulator)

    late = await _dial(simulator, conference_id, "4832830152")
    delete = await simulator.client.delete(f"/conferencia/{conference_id}")
    after = await simulator.conference(conference_id)

    assert dados["data_termino"] is None
    assert late["sucesso"] is True
    assert delete.status_code == 200
    assert after["data_termino"] is not None


def test_legacy_auto_end_conference_is_the_room_end_setting() -> None:
    from service.simulator.scenario import Scenario

    assert Scenario.model_validate({"auto_end_conference": False}).dialect.room_end == "on_delete"
    assert Scenario.model_validate({"auto_end_conference": True}).dialect.room_end == "auto"


@pytest.mark.parametrize("included", [True, False])
async def test_call_end_webhook_with_and_without_conferencia_id(
    start_simulator: StartSimulator, included: bool
) -> None:
    simulator = await _start(
        start_simulator, webhook_conference_id="included" if included else "omitted"
    )

    payload = await _call_end_payload(simulator)

    assert ("conferencia_id" in payload) is included
    assert payload["destino"]["numero"] == "+554832830151"


@pytest.mark.parametrize(("form", "kind"), [("number", int), ("string", str)])
async def test_every_id_is_a_number_or_every_id_a_string(
    start_simulator: StartSimulator, form: str, kind: type
) -> None:
    simulator = await start_simulator({"rules": QUICK, "dialect": {"ids": form}})
    for name in ("chamada_fim", "conferencia"):
        await simulator.client.put(f"/webhook/{name}", json={"url": HOOK})
    created = (await simulator.client.post("/conferencia", json={})).json()["dados"]["id"]
    dialed = (await _dial(simulator, created, "4832830151"))["dados"]["id"]

    dados = await simulator.conference(created)
    posts = await simulator.webhooks_when(lambda posts: len(posts) >= 3)

    ids = [created, dialed, dados["id"], dados["chamadas"][0]["id"]]
    ids.append(dados["chamadas"][0]["conferencia_id"])
    for post in posts:
        payload = post["json"]
        ids.extend(payload[key] for key in ("id", "chamada_id", "conferencia_id") if key in payload)
    assert len(ids) == 5 + 2 + 2 + 2
    assert {type(one) for one in ids} == {kind}


@pytest.mark.parametrize(
    ("prices", "decimals", "expected"),
    [
        ("number", 2, 0.12),
        ("string", 2, "0.12"),
        ("number", 6, 0.071234),
        ("string", 6, "0.071234"),
    ],
)
async def test_prices_as_numbers_or_strings_with_two_or_six_decimals(
    start_simulator: StartSimulator, prices: str, decimals: int, expected: object
) -> None:
    simulator = await _start(start_simulator, prices=prices, price_decimals=decimals)

    _, dados = await _settled_call(simulator)
    ledger = await simulator.ledger()

    assert dados["chamadas"][0]["preco"] == expected
    assert ledger["conferences"][0]["calls"][0]["price"] == str(expected)


async def test_scenario_tariffs_win_over_the_six_decimal_default(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(
        {
            "messy": False,
            "rules": QUICK,
            "tariffs": {"fixo": "0.1"},
            "dialect": {"price_decimals": 6, "prices": "string"},
        }
    )

    _, dados = await _settled_call(simulator)

    assert Decimal(dados["chamadas"][0]["preco"]) == Decimal("0.1")


@pytest.mark.parametrize("written", ["00:01:00", "00:00:60"])
async def test_a_billed_minute_is_written_the_dialects_way(
    start_simulator: StartSimulator, written: str
) -> None:
    # messy on: the setting must win over the seeded draws.
    simulator = await start_simulator({"rules": QUICK, "dialect": {"billed_minute": written}})
    conference_ids = [await simulator.create_conference() for _ in range(8)]
    for conference_id in conference_ids:
        await _dial(simulator, conference_id, "4832830151")

    billed = set()
    for conference_id in conference_ids:
        dados = await simulator.conference_when(
            conference_id, lambda seen: seen["chamadas"][0]["duracao_cobrada"] is not None
        )
        billed.add(dados["chamadas"][0]["duracao_cobrada"])

    assert billed == {written}


@pytest.mark.parametrize(
    ("timestamps", "pattern"),
    [("offset", r"T\d{2}:\d{2}:\d{2}-03:00$"), ("naive", r"T\d{2}:\d{2}:\d{2}$")],
)
async def test_timestamps_with_or_without_an_offset(
    start_simulator: StartSimulator, timestamps: str, pattern: str
) -> None:
    simulator = await _start(start_simulator, timestamps=timestamps)

    _, dados = await _settled_call(simulator)

    call = dados["chamadas"][0]
    for stamp in (dados["data_criacao"], dados["data_termino"], call["data_inicio"]):
        assert re.search(pattern, stamp), stamp


def _seconds(hms: str) -> int:
    hours, minutes, seconds = (int(part) for part in hms.split(":"))
    return hours * 3600 + minutes * 60 + seconds


async def test_scaled_clock_fits_each_call_inside_its_conference(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(
        {"messy": False, "rules": [{"ring_seconds": 5, "talk_seconds": 79}]}, time_scale=100.0
    )

    _, dados = await _settled_call(simulator)
    dados = await simulator.conference_when(
        int(dados["id"]), lambda s: s["data_termino"] is not None
    )

    call = dados["chamadas"][0]
    created = datetime.fromisoformat(call["data_criacao"])
    ended = datetime.fromisoformat(dados["data_termino"])
    assert ended - created == timedelta(seconds=_seconds(call["duracao"]))
    assert _seconds(call["duracao_falada"]) == 79
    assert ended <= datetime.now(ended.tzinfo)


async def test_real_clock_squeezes_scaled_durations_into_real_seconds(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(
        {
            "messy": False,
            "rules": [{"ring_seconds": 5, "talk_seconds": 79}],
            "dialect": {"clock": "real"},
        },
        time_scale=100.0,
    )

    _, dados = await _settled_call(simulator)
    dados = await simulator.conference_when(
        int(dados["id"]), lambda s: s["data_termino"] is not None
    )

    created = datetime.fromisoformat(dados["chamadas"][0]["data_criacao"])
    ended = datetime.fromisoformat(dados["data_termino"])
    assert ended - created < timedelta(seconds=2)


async def test_above_max_rps_the_provider_answers_429_in_its_envelope(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator({"max_rps": 3})

    statuses = [(await simulator.client.get("/webhook")).status_code for _ in range(5)]
    refused = await simulator.client.get("/webhook")

    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses[3:]
    assert refused.status_code == 429
    assert refused.json() == {
        "status": 429,
        "sucesso": False,
        "motivo": 0,
        "mensagem": "limite de requisições por segundo excedido",
        "dados": None,
    }

    async def admitted() -> int:
        return (await simulator.client.get("/webhook")).status_code

    assert await eventually(admitted, lambda status: status == 200) == 200


async def test_command_line_settings_outlast_a_scenario_put_at_runtime(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator()
    simulator.simulation.config.overrides.update({"dialect": {"numbers": "national"}})
    put = await simulator.client.put("/_simulator/scenario", json={"messy": False})

    conference_id = await simulator.create_conference()
    await _dial(simulator, conference_id, "+554832830151")

    assert put.json()["dialect"]["numbers"] == "national"
    assert (await simulator.conference(conference_id))["chamadas"][0]["numero"] == "4832830151"
