"""Calls go preparando -> chamando -> a final status, with durations and price by the scenario."""

from typing import Any

import pytest

from .conftest import Simulator, StartSimulator

RULES: list[dict[str, Any]] = [
    {"match": "^\\+554830000001$", "status": "atendida", "ring_seconds": 3, "talk_seconds": 42},
    {"match": "^\\+5548999990002$", "status": "atendida", "ring_seconds": 5, "talk_seconds": 61},
    {"match": "^\\+554830000003$", "status": "sem resposta", "ring_seconds": 30},
    {"match": "^\\+554830000004$", "status": "ocupado", "ring_seconds": 5},
    {"match": "^\\+554830000005$", "status": "congestionado", "ring_seconds": 2},
    {"match": "^\\+554830000006$", "status": "falha", "ring_seconds": 0},
    {"match": "^\\+554830000007$", "status": "cancelada", "ring_seconds": 4},
    {"match": "^\\+554830000008$", "status": "não existe", "ring_seconds": 1},
    {"match": "^\\+554830000009$", "status": "atendida", "ring_seconds": 2, "talk_seconds": 0},
    {"match": "^\\+554830000010$", "status": "atendida", "ring_seconds": 1, "talk_seconds": 180},
    {"match": "^\\+554830000011$", "status": "atendida", "talk_seconds": 30, "tipo": "movel"},
]


@pytest.fixture
async def ruled(start_simulator: StartSimulator) -> Simulator:
    return await start_simulator({"rules": RULES, "messy": False})


@pytest.mark.parametrize(
    ("numero", "expected"),
    [
        (
            "4830000001",
            {
                "status": "atendida",
                "duracao": "00:00:45",
                "duracao_cobrada": "00:01:00",
                "duracao_falada": "00:00:42",
                "preco": 0.12,
                "tipo": "fixo",
            },
        ),
        (
            "48999990002",
            {
                "status": "atendida",
                "duracao": "00:01:06",
                "duracao_cobrada": "00:02:00",
                "duracao_falada": "00:01:01",
                "preco": 0.70,
                "tipo": "movel",
            },
        ),
        ("4830000003", {"status": "sem resposta", "duracao": "00:00:30", "preco": 0}),
        ("4830000004", {"status": "ocupado", "duracao": "00:00:05", "preco": 0}),
        ("4830000005", {"status": "congestionado", "duracao": "00:00:02", "preco": 0}),
        ("4830000006", {"status": "falha", "duracao": "00:00:00", "preco": 0}),
        ("4830000007", {"status": "cancelada", "duracao": "00:00:04", "preco": 0}),
        ("4830000008", {"status": "não existe", "duracao": "00:00:01", "preco": 0}),
        (
            "4830000009",
            {
                "status": "atendida",
                "duracao": "00:00:02",
                "duracao_cobrada": "00:01:00",
                "duracao_falada": "00:00:00",
                "preco": 0.12,
            },
        ),
        (
            "4830000010",
            {
                "status": "atendida",
                "duracao": "00:03:01",
                "duracao_cobrada": "00:03:00",
                "duracao_falada": "00:03:00",
                "preco": 0.36,
            },
        ),
        ("4830000011", {"status": "atendida", "tipo": "movel", "preco": 0.35}),
    ],
)
async def test_call_reaches_the_rules_final_status_with_exact_bill(
    ruled: Simulator, numero: str, expected: dict[str, Any]
) -> None:
    conference_id = await ruled.create_conference()
    await ruled.dial(conference_id, numero)

    call = (await ruled.ended(conference_id))["chamadas"][0]

    if expected["status"] != "atendida":
        expected = {**expected, "duracao_cobrada": None, "duracao_falada": None}
    assert {key: call[key] for key in expected} == expected


async def test_unanswered_call_bills_nothing_and_records_nothing(ruled: Simulator) -> None:
    conference_id = await ruled.create_conference()
    await ruled.dial(conference_id, "4830000004", gravar_audio=True)

    call = (await ruled.ended(conference_id))["chamadas"][0]

    assert call["preco"] == 0
    assert call["url_gravacao"] is None
    assert (await ruled.ledger())["conferences"][0]["calls"][0]["price"] == "0.00"


async def test_ledger_reports_exact_decimal_prices(ruled: Simulator) -> None:
    conference_id = await ruled.create_conference()
    await ruled.dial(conference_id, "48999990002", gravar_audio=True)
    await ruled.ended(conference_id)

    [call] = (await ruled.ledger())["conferences"][0]["calls"]

    assert call == {
        "id": call["id"],
        "number": "+5548999990002",
        "status": "atendida",
        "duration_seconds": 66,
        "billed_seconds": 120,
        "talk_seconds": 61,
        "price": "0.70",
        "recording_url": f"https://recordings.simulator.invalid/{call['id']}.mp3",
        "created_by_control": False,
    }


async def test_default_rule_answers_after_3_seconds_and_talks_20(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator({"messy": False})
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    call = (await simulator.ended(conference_id))["chamadas"][0]

    assert (call["status"], call["duracao"], call["duracao_falada"]) == (
        "atendida",
        "00:00:23",
        "00:00:20",
    )


async def test_tariffs_come_from_the_scenario(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator(
        {"messy": False, "tariffs": {"fixo": "0.0725", "movel": "0.41"}}
    )
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")
    await simulator.ended(conference_id)

    [call] = (await simulator.ledger())["conferences"][0]["calls"]

    assert call["price"] == "0.0725"


async def test_call_is_preparing_then_ringing_then_talking_with_nothing_billed(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(
        {
            "messy": False,
            "rules": [{"prepare_seconds": 500, "ring_seconds": 1000, "talk_seconds": 100_000}],
        },
        time_scale=1000.0,
    )
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    def status_is(status: str) -> Any:
        return lambda seen: seen["chamadas"][0]["status"] == status

    preparing = await simulator.conference_when(conference_id, status_is("preparando"))
    ringing = await simulator.conference_when(conference_id, status_is("chamando"))
    talking = await simulator.conference_when(conference_id, status_is("atendida"))

    unbilled = {"duracao": None, "duracao_cobrada": None, "duracao_falada": None, "preco": None}
    for seen in (preparing, ringing, talking):
        call = seen["chamadas"][0]
        assert {key: call[key] for key in unbilled} == unbilled
        assert seen["data_termino"] is None
    assert preparing["chamadas"][0]["data_inicio"] is None
    assert ringing["chamadas"][0]["data_inicio"] is not None
    assert (await simulator.ledger())["conferences"][0]["calls"][0]["price"] is None


async def test_conference_ends_by_itself_once_its_last_call_ends(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(
        {
            "messy": False,
            "rules": [
                {"match": "0001$", "ring_seconds": 1, "talk_seconds": 10},
                {"match": "0002$", "ring_seconds": 1, "talk_seconds": 400},
            ],
        }
    )
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4830000001")
    await simulator.dial(conference_id, "4830000002")

    first_over = await simulator.conference_when(
        conference_id, lambda seen: seen["chamadas"][0]["duracao"] is not None
    )
    assert first_over["data_termino"] is None
    ended = await simulator.ended(conference_id)
    assert [call["duracao"] for call in ended["chamadas"]] == ["00:00:11", "00:06:41"]


async def test_conference_stays_open_when_auto_end_is_off(
    lasting_simulator: Simulator,
) -> None:
    simulator = lasting_simulator
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    seen = await simulator.conference_when(
        conference_id, lambda seen: seen["chamadas"][0]["duracao"] is not None
    )

    assert seen["data_termino"] is None
    assert (await simulator.conference(conference_id))["data_termino"] is None


async def test_rule_taken_at_dial_time_survives_a_scenario_change(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(
        {"messy": False, "rules": [{"ring_seconds": 1, "talk_seconds": 500}]}
    )
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "4832830151")

    await simulator.client.put(
        "/_simulator/scenario", json={"tariffs": {"fixo": "9.99"}, "messy": False}
    )

    call = (await simulator.ended(conference_id))["chamadas"][0]
    assert (call["duracao_falada"], call["preco"]) == ("00:08:20", 1.08)
