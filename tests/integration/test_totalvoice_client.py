"""The TotalVoice client against the provider simulator served over real HTTP: every endpoint,
every documented refusal, the faults it must survive, the dial it must never repeat, and its
rate budget.

Each test gets its own simulator (uvicorn on a free 127.0.0.1 port, in the test's event loop),
so its ledger, its journal and its seeded fault draws belong to that test alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import httpx
import pytest
import uvicorn

from service.adapters.totalvoice import TotalVoiceClient
from service.domain.conference import CallReport, ConferenceReport
from service.ports import (
    DialOutcomeUnknown,
    ProviderAuthFailed,
    ProviderError,
    ProviderInvalidParameter,
    ProviderNoBalance,
    ProviderNotActive,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
)
from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig
from tests.waiting import eventually

TOKEN = "integration-token"
# A default call (1 s preparing, 3 s ringing, 20 s talking) lasts 40 real milliseconds.
TIME_SCALE = 600.0
SEED = 7
NUMBER = "4832830151"
SAFE_ENDPOINTS = (
    "POST /conferencia",
    "GET /conferencia/{id}",
    "DELETE /conferencia/{id}",
    "GET /conferencia/relatorio",
    "GET /conferencia/chamadas/relatorio",
)
DIAL = "POST /conferencia/{id}"
UNKNOWN_CONFERENCE = "999999"  # the simulator's ids start at 4921
QUERY_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


class _Server(uvicorn.Server):
    """Leaves the test runner's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Simulator:
    base_url: str
    control: httpx.AsyncClient

    async def play(self, **scenario: Any) -> None:
        response = await self.control.put("/scenario", json=scenario)
        assert response.status_code == 200, response.text

    async def reset(self) -> None:
        """The default scenario, and no conference, call or request remembered."""
        await self.play()
        assert (await self.control.post("/reset")).status_code == 200

    async def requests(self, endpoint: str) -> list[dict[str, Any]]:
        response = await self.control.get("/requests", params={"limit": 10_000})
        assert response.status_code == 200, response.text
        return [seen for seen in response.json() if seen["endpoint"] == endpoint]

    async def statuses(self, endpoint: str) -> list[int]:
        return [seen["status"] for seen in await self.requests(endpoint)]

    async def ledger(self) -> dict[str, Any]:
        response = await self.control.get("/ledger")
        assert response.status_code == 200, response.text
        ledger: dict[str, Any] = response.json()
        return ledger

    async def finished_conference(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """A conference that already ended, billed, created through the control API."""
        response = await self.control.post("/conferences", json={"calls": calls})
        assert response.status_code == 201, response.text
        conference: dict[str, Any] = response.json()
        return conference


@contextlib.asynccontextmanager
async def served_simulator() -> AsyncIterator[Simulator]:
    """The simulator behind uvicorn on a free 127.0.0.1 port, in this event loop."""
    # Real walls: these tests compare the provider's times and report periods with real time.
    real_walls = {"dialect": {"clock": "real"}}
    app = create_app(
        SimulatorConfig(tokens=(TOKEN,), time_scale=TIME_SCALE, seed=SEED, overrides=real_walls)
    )
    config = uvicorn.Config(
        app,
        lifespan="on",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(config)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer waits 40 ms for a delayed ACK.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    control = httpx.AsyncClient(base_url=f"{base_url}/_simulator", timeout=5.0)

    async def healthy() -> bool:
        if serving.done():
            raise AssertionError(f"the simulator stopped while starting: {serving!r}")
        with contextlib.suppress(httpx.TransportError):
            return (await control.get("/health")).status_code == 200
        return False

    try:
        await eventually(healthy, timeout=10.0, what="the simulator's health", interval=0.01)
        yield Simulator(base_url, control)
    finally:
        await control.aclose()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10.0)
        listener.close()


@pytest.fixture(scope="module")
async def shared_simulator() -> AsyncIterator[Simulator]:
    async with served_simulator() as simulator:
        yield simulator


@pytest.fixture
async def simulator(shared_simulator: Simulator) -> Simulator:
    """The module's simulator, reset: starting one per test would cost more than the tests."""
    await shared_simulator.reset()
    return shared_simulator


@pytest.fixture
async def own_simulator() -> AsyncIterator[Simulator]:
    """A simulator for one test: its seeded fault draws start afresh, and a request it is still
    answering when the test ends cannot reach the next test's journal."""
    async with served_simulator() as simulator:
        yield simulator


Connect = Callable[..., TotalVoiceClient]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Clients of a simulator (or of any address); `token=None` sends no Access-Token at all."""
    opened: list[TotalVoiceClient] = []

    def connect(
        base_url: str,
        *,
        token: str | None = TOKEN,
        max_rps: float = 1000.0,
        read_timeout: float = 5.0,
    ) -> TotalVoiceClient:
        client = TotalVoiceClient.create(base_url, token, max_rps, read_timeout=read_timeout)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.aclose()


@pytest.fixture
def provider(simulator: Simulator, connect: Connect) -> TotalVoiceClient:
    return connect(simulator.base_url)


def report_window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


async def settled(provider: TotalVoiceClient, conference_id: str) -> ConferenceReport:
    async def probe() -> ConferenceReport | None:
        report = await provider.get_conference(conference_id)
        done = report.calls and all(call.is_settled for call in report.calls)
        return report if done and not report.is_open else None

    return await eventually(probe, timeout=5.0, what="every call settled", interval=0.01)


# --- every endpoint ------------------------------------------------------------------------


async def test_create_sends_an_empty_object_and_opens_an_empty_conference(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    conference_id = await provider.create_conference()

    report = await provider.get_conference(conference_id)

    assert (report.provider_conference_id, report.is_open, report.calls) == (
        conference_id,
        True,
        (),
    )
    assert report.created_at is not None
    assert abs(report.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    [create] = await simulator.requests("POST /conferencia")
    assert (create["path"], create["body"], create["status"]) == ("/conferencia", {}, 200)
    [known] = (await simulator.ledger())["conferences"]
    assert str(known["id"]) == conference_id


async def test_a_participant_is_dialed_with_the_documented_body_and_read_until_billed(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    await simulator.play(rules=[{"match": "98765", "tipo": "movel", "talk_seconds": 75}])
    conference_id = await provider.create_conference()

    call_id = await provider.add_participant(conference_id, "11987654321", "+554832830151", True)

    [dial] = await simulator.requests(DIAL)
    assert dial["path"] == f"/conferencia/{conference_id}"
    assert dial["body"] == {"numero": "11987654321", "bina": "+554832830151", "gravar_audio": True}
    report = await settled(provider, conference_id)
    [call] = report.calls
    [known] = (await simulator.ledger())["conferences"][0]["calls"]
    assert call == CallReport(
        call_id=call_id,
        number="+5511987654321",
        status="atendida",
        started_at=call.started_at,
        duration_seconds=known["duration_seconds"],
        billed_seconds=120,
        talk_seconds=75,
        price=Decimal("0.70"),
        recording_url=known["recording_url"],
        conference_id=conference_id,
    )
    assert str(known["id"]) == call_id and Decimal(known["price"]) == call.price
    assert call.recording_url is not None and call.started_at is not None
    # The provider writes whole seconds (sometimes milliseconds), so allow for the truncation.
    second = timedelta(seconds=1)
    assert report.created_at is not None and report.created_at <= call.started_at + second
    assert report.ended_at is not None and report.ended_at + second >= call.started_at


async def test_ending_a_conference_hangs_up_and_ending_it_again_is_not_an_error(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    await simulator.play(rules=[{"talk_seconds": 3600}])
    conference_id = await provider.create_conference()
    await provider.add_participant(conference_id, NUMBER, None, False)

    await provider.end_conference(conference_id)
    await provider.end_conference(conference_id)

    report = await provider.get_conference(conference_id)
    assert not report.is_open
    assert all(call.is_settled for call in report.calls)
    assert await simulator.statuses("DELETE /conferencia/{id}") == [200, 404]


async def test_an_ended_conference_takes_no_participant(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    conference_id = await provider.create_conference()
    await provider.end_conference(conference_id)

    with pytest.raises(ProviderNotActive) as raised:
        await provider.add_participant(conference_id, NUMBER, None, False)

    assert isinstance(raised.value, ProviderNotFound)
    assert (raised.value.status, raised.value.reason) == (404, 80)
    assert (await simulator.ledger())["dials"] == []


async def test_an_unknown_conference_is_not_found_and_not_asked_again(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    for action in (
        lambda: provider.get_conference(UNKNOWN_CONFERENCE),
        lambda: provider.add_participant(UNKNOWN_CONFERENCE, NUMBER, None, False),
        lambda: provider.end_conference(UNKNOWN_CONFERENCE),
    ):
        with pytest.raises(ProviderNotFound) as raised:
            await action()
        assert type(raised.value) is ProviderNotFound
        assert (raised.value.status, raised.value.reason) == (404, 60)

    for endpoint in ("GET /conferencia/{id}", DIAL, "DELETE /conferencia/{id}"):
        assert await simulator.statuses(endpoint) == [404]


async def test_the_conference_report_pages_past_200_without_relying_on_total(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    for _ in range(450):
        await simulator.finished_conference([])
    dialed = await provider.create_conference()
    call_id = await provider.add_participant(dialed, NUMBER, None, False)
    start, end = report_window()

    by_metadata = {}
    for metadata in (True, False):
        await simulator.play(report_metadata=metadata)
        by_metadata[metadata] = await provider.conference_report(start, end)

    known = {str(conference["id"]) for conference in (await simulator.ledger())["conferences"]}
    for reports in by_metadata.values():
        assert len(reports) == 451
        assert {report.provider_conference_id for report in reports} == known
        [with_call] = [report for report in reports if report.calls]
        assert (with_call.provider_conference_id, with_call.calls[0].call_id) == (dialed, call_id)
    pages = [
        parse_qs(seen["query"]) for seen in await simulator.requests("GET /conferencia/relatorio")
    ]
    assert [(page["posicao"], page["limite"]) for page in pages] == [
        (["0"], ["200"]),
        (["200"], ["200"]),
        (["400"], ["200"]),
    ] * 2
    for page in pages:
        assert QUERY_TIME.fullmatch(page["data_inicio"][0])
        assert QUERY_TIME.fullmatch(page["data_fim"][0])


async def test_the_calls_report_pages_and_reads_every_call_exactly(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    kinds: list[dict[str, Any]] = [
        {"number": "4832830151", "status": "atendida", "talk_seconds": 17},
        {"number": "+5511987654321", "status": "atendida", "talk_seconds": 61, "record": True},
        {"number": "11912341234", "status": "ocupado"},
        {"number": "4833330000", "status": "sem resposta"},
        {"number": "4833330001", "status": "não existe"},
        {"number": "4833330002", "status": "atendida", "price": "1.23", "billed_seconds": 180},
    ]
    for conference in range(3):
        await simulator.finished_conference([kinds[(conference + i) % 6] for i in range(90)])
    start, end = report_window()

    calls = await provider.calls_report(start, end)

    known = {
        str(call["id"]): call
        for conference in (await simulator.ledger())["conferences"]
        for call in conference["calls"]
    }
    assert len(calls) == len(known) == 270
    for call in calls:
        assert call.call_id is not None
        expected = known[call.call_id]
        assert (call.number, call.status) == (expected["number"], expected["status"])
        assert (call.duration_seconds, call.billed_seconds, call.talk_seconds) == (
            expected["duration_seconds"],
            expected["billed_seconds"],
            expected["talk_seconds"],
        )
        assert call.price == Decimal(expected["price"])
        assert call.recording_url == expected["recording_url"]
        assert call.is_settled
    busy = next(call for call in calls if call.status == "ocupado")
    assert (busy.billed_seconds, busy.billed_price) == (None, Decimal("0"))
    pages = [
        parse_qs(seen["query"])
        for seen in await simulator.requests("GET /conferencia/chamadas/relatorio")
    ]
    assert [(page["posicao"], page["limite"]) for page in pages] == [
        (["0"], ["200"]),
        (["200"], ["200"]),
    ]


# --- documented refusals -------------------------------------------------------------------


@pytest.mark.parametrize("token", ["not-the-token", None], ids=["wrong", "missing"])
async def test_a_wrong_or_missing_token_fails_authentication_once_per_call(
    simulator: Simulator, connect: Connect, token: str | None
) -> None:
    provider = connect(simulator.base_url, token=token)
    start, end = report_window()

    for action in (
        lambda: provider.create_conference(),
        lambda: provider.add_participant("4921", NUMBER, None, False),
        lambda: provider.get_conference("4921"),
        lambda: provider.end_conference("4921"),
        lambda: provider.conference_report(start, end),
        lambda: provider.calls_report(start, end),
    ):
        with pytest.raises(ProviderAuthFailed) as raised:
            await action()
        assert (raised.value.status, raised.value.reason) == (403, 40)

    for endpoint in (*SAFE_ENDPOINTS, DIAL):
        assert await simulator.statuses(endpoint) == [403], endpoint
    ledger = await simulator.ledger()
    assert (ledger["conferences"], ledger["dials"]) == ([], [])


@pytest.mark.parametrize(
    ("number", "reason"),
    [("483283015", 11), ("+55 48 3283-0151", 11), ("", 10)],
    ids=["too-short", "punctuated", "missing"],
)
async def test_a_bad_number_is_an_invalid_parameter_and_dials_nobody(
    simulator: Simulator, provider: TotalVoiceClient, number: str, reason: int
) -> None:
    conference_id = await provider.create_conference()

    with pytest.raises(ProviderInvalidParameter) as raised:
        await provider.add_participant(conference_id, number, None, False)

    assert (raised.value.status, raised.value.reason) == (405, reason)
    assert await simulator.statuses(DIAL) == [405]
    assert (await simulator.ledger())["dials"] == []


async def test_no_balance_refuses_the_dial_for_good(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    await simulator.play(no_balance=True)
    conference_id = await provider.create_conference()

    with pytest.raises(ProviderNoBalance) as raised:
        await provider.add_participant(conference_id, NUMBER, None, False)

    assert (raised.value.status, raised.value.reason) == (402, 9)
    assert await simulator.statuses(DIAL) == [402]
    assert (await simulator.ledger())["dials"] == []


# --- faults --------------------------------------------------------------------------------


async def test_faults_on_safe_calls_are_retried_until_they_succeed(
    own_simulator: Simulator, connect: Connect
) -> None:
    simulator = own_simulator
    provider = connect(simulator.base_url)
    # This simulator draws its faults from its seed and this test is its only client, so the run
    # is the same every time: with seed 7 each kind is injected, twice in a row on one create.
    faults = {"429": 0.05, "500": 0.05, "502": 0.05}
    await simulator.play(
        rules=[{"talk_seconds": 3600}], errors=dict.fromkeys(SAFE_ENDPOINTS, faults)
    )
    start, end = report_window()

    for _ in range(5):
        conference_id = await provider.create_conference()
        await provider.add_participant(conference_id, NUMBER, None, False)
        for _ in range(5):
            assert (await provider.get_conference(conference_id)).calls
        await provider.end_conference(conference_id)
    assert len(await provider.conference_report(start, end)) == 5
    assert len(await provider.calls_report(start, end)) == 5

    by_endpoint = {endpoint: await simulator.statuses(endpoint) for endpoint in SAFE_ENDPOINTS}
    injected = [status for statuses in by_endpoint.values() for status in statuses if status != 200]
    assert sorted(set(injected)) == [429, 500, 502], by_endpoint
    assert await simulator.statuses(DIAL) == [200] * 5


@pytest.mark.parametrize(
    ("fault", "error", "reason"),
    [
        ("429", ProviderRateLimited, 0),
        ("500", ProviderUnavailable, 50),
        ("502", ProviderUnavailable, None),
    ],
)
async def test_a_fault_on_every_attempt_raises_the_typed_error(
    simulator: Simulator,
    provider: TotalVoiceClient,
    fault: str,
    error: type[ProviderError],
    reason: int | None,
) -> None:
    conference_id = await provider.create_conference()
    await simulator.play(errors={"GET /conferencia/{id}": {fault: 1.0}})

    with pytest.raises(ProviderUnavailable) as raised:
        await provider.get_conference(conference_id)

    assert type(raised.value) is error
    assert (raised.value.status, raised.value.reason) == (int(fault), reason)
    assert await simulator.statuses("GET /conferencia/{id}") == [int(fault)] * 3


@pytest.mark.parametrize("fault", ["500", "502", "503"])
async def test_a_dial_answered_with_a_server_error_is_an_unknown_outcome_asked_once(
    simulator: Simulator, provider: TotalVoiceClient, fault: str
) -> None:
    conference_id = await provider.create_conference()
    await simulator.play(errors={DIAL: {fault: 1.0}})

    with pytest.raises(DialOutcomeUnknown) as raised:
        await provider.add_participant(conference_id, NUMBER, None, False)

    assert raised.value.status == int(fault)
    assert await simulator.statuses(DIAL) == [int(fault)]


async def test_a_rate_limited_dial_is_unavailable_and_asked_once(
    simulator: Simulator, provider: TotalVoiceClient
) -> None:
    conference_id = await provider.create_conference()
    await simulator.play(errors={DIAL: {"429": 1.0}})

    with pytest.raises(ProviderRateLimited):
        await provider.add_participant(conference_id, NUMBER, None, False)

    assert await simulator.statuses(DIAL) == [429]
    assert (await simulator.ledger())["dials"] == []


async def test_a_dial_whose_answer_times_out_is_unknown_but_was_placed_once(
    own_simulator: Simulator, connect: Connect
) -> None:
    simulator = own_simulator
    await simulator.play(dial_timeout_rate=1.0, dial_timeout_seconds=0.6)
    provider = connect(simulator.base_url, read_timeout=0.2)
    conference_id = await provider.create_conference()

    with pytest.raises(DialOutcomeUnknown) as raised:
        await provider.add_participant(conference_id, NUMBER, None, False)

    assert isinstance(raised.value.__cause__, aiohttp.SocketTimeoutError)
    assert (await simulator.ledger())["dials"] == [
        {"conference_id": int(conference_id), "number": "+554832830151", "count": 1}
    ]
    # What the worker does next: it finds the call in the conference instead of dialing again.
    [call] = (await provider.get_conference(conference_id)).calls
    assert call.number == "+554832830151" and call.call_id is not None


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_dial_placed_but_answered_with_a_server_error_is_unknown_and_not_repeated(
    own_simulator: Simulator, connect: Connect, status: int
) -> None:
    simulator = own_simulator
    await simulator.play(dial_errors_after_placing={str(status): 1.0})
    provider = connect(simulator.base_url)
    conference_id = await provider.create_conference()

    with pytest.raises(DialOutcomeUnknown) as raised:
        await provider.add_participant(conference_id, NUMBER, None, False)

    assert raised.value.status == status
    ledger = await simulator.ledger()
    assert ledger["dials"] == [
        {"conference_id": int(conference_id), "number": "+554832830151", "count": 1}
    ]
    assert ledger["requests"]["POST /conferencia/{id}"] == {str(status): 1}


async def test_an_unreachable_provider_is_unavailable_and_a_dial_is_not_sent(
    connect: Connect,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{unused.getsockname()[1]}"
    provider = connect(nobody)

    with pytest.raises(ProviderUnavailable) as dial:
        await provider.add_participant("4921", NUMBER, None, False)
    with pytest.raises(ProviderUnavailable) as get:
        await provider.get_conference("4921")

    assert type(dial.value) is ProviderUnavailable
    assert isinstance(dial.value.__cause__, aiohttp.ClientConnectorError)
    assert isinstance(get.value.__cause__, aiohttp.ClientConnectorError)


# --- rate budget ---------------------------------------------------------------------------


async def test_the_rate_budget_spaces_requests_out(simulator: Simulator, connect: Connect) -> None:
    provider = connect(simulator.base_url, max_rps=5)
    conference_id = await provider.create_conference()

    started = time.monotonic()
    await asyncio.gather(*(provider.get_conference(conference_id) for _ in range(15)))
    elapsed = time.monotonic() - started

    # A burst of one second's budget (5), then 10 more at 5 a second.
    assert 1.95 <= elapsed < 10.0, elapsed
    assert await simulator.statuses("GET /conferencia/{id}") == [200] * 15
