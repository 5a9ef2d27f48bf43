"""GET /conferencia/relatorio and /conferencia/chamadas/relatorio: periods, formats and paging."""

from datetime import UTC, datetime, timedelta

import pytest

from service.simulator.clock import SAO_PAULO

from .conftest import Simulator, StartSimulator

CONFERENCE_KEYS = {"id", "data_criacao", "data_termino", "chamadas"}
CALL_KEYS = {
    "id",
    "conferencia_id",
    "url_gravacao",
    "numero",
    "data_criacao",
    "cli",
    "duracao",
    "duracao_cobrada",
    "duracao_falada",
    "status",
    "preco",
    "data_inicio",
    "tipo",
}


@pytest.fixture
async def simulator(start_simulator: StartSimulator) -> Simulator:
    """Real walls: the periods below are written around real time (the scaled clock's walls are
    tested in test_dialects)."""
    return await start_simulator({"messy": False, "dialect": {"clock": "real"}})


@pytest.fixture
async def lasting_simulator(start_simulator: StartSimulator) -> Simulator:
    return await start_simulator(
        {"messy": False, "dialect": {"clock": "real", "room_end": "on_delete"}}
    )


def _today() -> str:
    return datetime.now(SAO_PAULO).date().isoformat()


def _periods() -> list[tuple[str, str]]:
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    before, after = now - hour, now + hour
    local_before, local_after = before.astimezone(SAO_PAULO), after.astimezone(SAO_PAULO)
    worded = "%Y-%m-%d %H:%M:%S UTC"
    return [
        (_today(), _today()),
        (before.strftime("%Y-%m-%dT%H:%M:%SZ"), after.strftime("%Y-%m-%dT%H:%M:%SZ")),
        (local_before.isoformat(timespec="seconds"), local_after.isoformat(timespec="seconds")),
        (before.strftime(worded), after.strftime(worded)),
        (before.strftime(worded).replace(" ", "+"), after.strftime(worded).replace(" ", "+")),
        (
            local_before.replace(tzinfo=None).isoformat(timespec="seconds"),
            local_after.replace(tzinfo=None).isoformat(timespec="milliseconds"),
        ),
    ]


@pytest.mark.parametrize(
    "period",
    _periods(),
    ids=["date", "iso-z", "iso-offset", "worded-utc", "worded-utc-plus", "iso-local"],
)
async def test_report_accepts_every_date_format_the_sdks_send(
    simulator: Simulator, period: tuple[str, str]
) -> None:
    conference_id = await simulator.create_conference()

    response = await simulator.client.get(
        "/conferencia/relatorio", params={"data_inicio": period[0], "data_fim": period[1]}
    )

    assert response.status_code == 200, response.text
    report = response.json()["dados"]["relatorio"]
    assert [entry["id"] for entry in report] == [conference_id]
    assert set(report[0]) == CONFERENCE_KEYS


async def test_unencoded_plus_of_an_offset_still_parses(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()
    now = datetime.now(SAO_PAULO)
    start = (now - timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    end = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S-03:00")

    response = await simulator.client.get(
        f"/conferencia/relatorio?data_inicio={start}&data_fim={end}"
    )

    assert [entry["id"] for entry in response.json()["dados"]["relatorio"]] == [conference_id]


async def test_report_leaves_out_conferences_outside_the_period(simulator: Simulator) -> None:
    await simulator.create_conference()
    yesterday = (datetime.now(SAO_PAULO) - timedelta(days=1)).date().isoformat()

    response = await simulator.client.get(
        "/conferencia/relatorio", params={"data_inicio": yesterday, "data_fim": yesterday}
    )

    assert response.json()["dados"]["relatorio"] == []
    assert response.json()["dados"]["total"] == 0


@pytest.mark.parametrize("path", ["/conferencia/relatorio", "/conferencia/chamadas/relatorio"])
@pytest.mark.parametrize(
    ("params", "motivo"),
    [
        ({}, 10),
        ({"data_fim": "2024-01-01"}, 10),
        ({"data_inicio": "2024-01-01"}, 10),
        ({"data_inicio": "", "data_fim": "2024-01-01"}, 10),
        ({"data_inicio": "ontem", "data_fim": "2024-01-01"}, 11),
        ({"data_inicio": "2024-13-45", "data_fim": "2024-01-01"}, 11),
        ({"data_inicio": "2024-01-01", "data_fim": "14/03/2018"}, 11),
        ({"data_inicio": "2024-01-01", "data_fim": "2024-01-02", "limite": "201"}, 11),
        ({"data_inicio": "2024-01-01", "data_fim": "2024-01-02", "limite": "0"}, 11),
        ({"data_inicio": "2024-01-01", "data_fim": "2024-01-02", "limite": "dez"}, 11),
        ({"data_inicio": "2024-01-01", "data_fim": "2024-01-02", "posicao": "-1"}, 11),
    ],
)
async def test_report_refuses_bad_queries_with_405(
    simulator: Simulator, path: str, params: dict[str, str], motivo: int
) -> None:
    response = await simulator.client.get(path, params=params)

    assert response.status_code == 405
    assert response.json()["motivo"] == motivo
    assert response.json()["sucesso"] is False


async def test_missing_date_names_the_parameter(simulator: Simulator) -> None:
    response = await simulator.client.get(
        "/conferencia/relatorio", params={"data_inicio": "2024-01-01"}
    )

    assert response.json()["mensagem"] == "o parametro data_fim é obrigatório"


async def test_report_pages_with_posicao_and_limite(simulator: Simulator) -> None:
    created = [await simulator.create_conference() for _ in range(5)]
    today = {"data_inicio": _today(), "data_fim": _today()}

    pages = [
        (
            await simulator.client.get(
                "/conferencia/relatorio", params={**today, "posicao": str(offset), "limite": "2"}
            )
        ).json()["dados"]
        for offset in (0, 2, 4, 6)
    ]

    assert [[entry["id"] for entry in page["relatorio"]] for page in pages] == [
        created[0:2],
        created[2:4],
        created[4:5],
        [],
    ]
    assert [(page["total"], page["posicao"], page["limite"]) for page in pages] == [
        (5, 0, 2),
        (5, 2, 2),
        (5, 4, 2),
        (5, 6, 2),
    ]


async def test_report_limit_defaults_to_100_and_accepts_200(simulator: Simulator) -> None:
    for _ in range(101):
        await simulator.create_conference()
    today = {"data_inicio": _today(), "data_fim": _today()}

    default = (await simulator.client.get("/conferencia/relatorio", params=today)).json()["dados"]
    widest = (
        await simulator.client.get("/conferencia/relatorio", params={**today, "limite": "200"})
    ).json()["dados"]

    assert (len(default["relatorio"]), default["limite"], default["total"]) == (100, 100, 101)
    assert len(widest["relatorio"]) == 101


async def test_report_metadata_can_be_left_out(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator({"report_metadata": False, "dialect": {"clock": "real"}})
    await simulator.create_conference()

    response = await simulator.client.get(
        "/conferencia/relatorio", params={"data_inicio": _today(), "data_fim": _today()}
    )

    assert set(response.json()["dados"]) == {"relatorio"}


async def test_report_shows_calls_with_their_bills(simulator: Simulator) -> None:
    conference_id = await simulator.create_conference()
    await simulator.dial(conference_id, "48999990001")
    ended = await simulator.ended(conference_id)

    response = await simulator.client.get(
        "/conferencia/relatorio", params={"data_inicio": _today(), "data_fim": _today()}
    )

    assert response.json()["dados"]["relatorio"] == [ended]


async def test_call_report_is_a_flat_list_of_calls(lasting_simulator: Simulator) -> None:
    simulator = lasting_simulator
    first = await simulator.create_conference()
    second = await simulator.create_conference()
    calls = [
        await simulator.dial(first, "4832830151"),
        await simulator.dial(second, "4832830152"),
        await simulator.dial(second, "48999990003"),
    ]

    response = await simulator.client.get(
        "/conferencia/chamadas/relatorio", params={"data_inicio": _today(), "data_fim": _today()}
    )

    report = response.json()["dados"]["relatorio"]
    assert [(entry["id"], entry["conferencia_id"]) for entry in report] == [
        (calls[0], first),
        (calls[1], second),
        (calls[2], second),
    ]
    assert all(set(entry) == CALL_KEYS for entry in report)
    assert response.json()["dados"]["total"] == 3
