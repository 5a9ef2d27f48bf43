"""Messy output: string ids, milliseconds, "00:00:60", integer zero prices, all from the seed."""

import re
from typing import Any

from .conftest import Simulator, StartSimulator

NUMBERS = [f"48300000{index:02d}" for index in range(40)]
WITH_MILLISECONDS = re.compile(r"T\d{2}:\d{2}:\d{2}\.\d{3}-03:00$")
WITHOUT_MILLISECONDS = re.compile(r"T\d{2}:\d{2}:\d{2}-03:00$")


async def _finished_calls(simulator: Simulator) -> list[dict[str, Any]]:
    conference_id = await simulator.create_conference()
    for number in NUMBERS:
        await simulator.dial(conference_id, number)
    await simulator.conference_when(
        conference_id, lambda seen: all(call["duracao"] for call in seen["chamadas"])
    )
    calls: list[dict[str, Any]] = (await simulator.conference(conference_id))["chamadas"]
    return calls


def _look(call: dict[str, Any]) -> tuple[object, ...]:
    """How a call is written, leaving out what the wall clock decides."""
    return (
        type(call["id"]),
        type(call["conferencia_id"]),
        bool(WITH_MILLISECONDS.search(call["data_criacao"])),
        call["duracao_cobrada"],
        type(call["preco"]),
    )


RULES = {
    "auto_end_conference": False,
    "rules": [
        {"match": "[02468]$", "ring_seconds": 1, "talk_seconds": 30},
        {"match": "", "status": "ocupado", "ring_seconds": 1},
    ],
}


async def test_messy_output_mixes_every_documented_variant(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator(RULES)

    calls = await _finished_calls(simulator)

    assert {type(call["id"]) for call in calls} == {int, str}
    assert {type(call["conferencia_id"]) for call in calls} == {int, str}
    assert any(WITH_MILLISECONDS.search(call["data_criacao"]) for call in calls)
    assert any(WITHOUT_MILLISECONDS.search(call["data_criacao"]) for call in calls)
    answered = [call for call in calls if call["status"] == "atendida"]
    assert {call["duracao_cobrada"] for call in answered} == {"00:00:60", "00:01:00"}
    unanswered = [call for call in calls if call["status"] == "ocupado"]
    assert {type(call["preco"]) for call in unanswered} == {int, float}
    assert all(str(call["id"]).isdigit() for call in calls)


async def test_same_seed_writes_the_same_mess(start_simulator: StartSimulator) -> None:
    first = await _finished_calls(await start_simulator(RULES, seed=5))
    again = await _finished_calls(await start_simulator(RULES, seed=5))
    other = await _finished_calls(await start_simulator(RULES, seed=6))

    assert [_look(call) for call in first] == [_look(call) for call in again]
    assert [_look(call) for call in first] != [_look(call) for call in other]


async def test_the_same_call_always_looks_the_same(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator(RULES)
    conference_id = await simulator.create_conference()
    for number in NUMBERS[:10]:
        await simulator.dial(conference_id, number)

    views = [await simulator.conference(conference_id) for _ in range(3)]

    ids = [[call["id"] for call in view["chamadas"]] for view in views]
    assert ids[0] == ids[1] == ids[2]


async def test_tidy_output_when_messy_is_off(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({**RULES, "messy": False})

    calls = await _finished_calls(simulator)

    assert all(type(call["id"]) is int and type(call["conferencia_id"]) is int for call in calls)
    assert all(WITHOUT_MILLISECONDS.search(call["data_criacao"]) for call in calls)
    assert {call["duracao_cobrada"] for call in calls if call["status"] == "atendida"} == {
        "00:01:00"
    }
    assert {type(call["preco"]) for call in calls} == {float}
