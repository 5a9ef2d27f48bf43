"""The edges of the real api process: bounded request heads and slow bodies, webhooks that slow
senders cannot starve, disconnects that are not errors, one 404 shape, no redirects, an Allow
header that tells the truth, and the server's own refusals in problem+json."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import API_TOKEN, WEBHOOK_SECRET, Base, Lane, open_lane
from tests.waiting import eventually

HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT = 2.0
WEBHOOK_BODY_TIMEOUT = 3.0
PROBLEM = "application/problem+json"
HOOK = f"/v1/webhooks/totalvoice/{WEBHOOK_SECRET}"
# The api's RSS under the worst these tests send; README ("Limits at the edge") has the sums.
RSS_CEILING_MB = 150


@pytest.fixture(scope="module")
async def edge(base: Base) -> AsyncIterator[Lane]:
    lane = await open_lane(
        base,
        API_MAX_HEADER_BYTES=str(HEADER_BYTES),
        API_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        WEBHOOK_BODY_TIMEOUT_SECONDS=str(WEBHOOK_BODY_TIMEOUT),
        WEBHOOK_MAX_CONCURRENCY="4",
    )
    yield lane
    assert not await lane.close()


def api_pid(lane: Lane) -> int:
    [api] = [p for p in lane.processes if p.name == "api"]
    return api.process.pid


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def connect(lane: Lane) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = lane.api_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def answer(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    """What the server wrote before it closed, or b"" when it reset the connection."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionError:
        return b""


async def endless_header(lane: Lane, chunk: bytes, pause: float, limit: int) -> tuple[int, float]:
    """Send one header value that never ends; the bytes sent and the seconds until the server
    cut the connection."""
    reader, writer = await connect(lane)
    started = time.monotonic()
    sent = 0
    writer.write(b"GET /v1/conferences HTTP/1.1\r\nHost: api\r\nX-Pad: ")
    try:
        while sent < limit and not reader.at_eof():
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if pause:
                await asyncio.sleep(pause)
        cut = await answer(reader)
    except ConnectionError:
        cut = b""
    elapsed = time.monotonic() - started
    writer.close()
    assert sent < limit, "the server never cut the header"
    assert cut == b"" or cut.startswith((b"HTTP/1.1 431", b"HTTP/1.1 408")), cut[:200]
    return sent, elapsed


async def test_oversized_and_endless_headers_are_cut_and_memory_stays_bounded(edge: Lane) -> None:
    pid = api_pid(edge)
    before = rss_mb(pid)
    peak = before
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    big = 60 * 1024 * 1024
    # 8 connections each sending a 60 MiB header value as fast as the socket takes it, and 8
    # sending one that trickles and never ends.
    floods = [endless_header(edge, b"a" * 65536, 0, big) for _ in range(8)]
    trickles = [endless_header(edge, b"a" * 64, 0.05, big) for _ in range(8)]
    results = await asyncio.gather(*floods, *trickles)
    sampling = False
    await sampler
    flood_sent = [sent for sent, _ in results[:8]]
    trickle_cut = [elapsed for _, elapsed in results[8:]]
    print(
        f"\nheaders: RSS {before:.0f} MB before, peak {peak:.0f} MB (ceiling {RSS_CEILING_MB} MB); "
        f"60 MiB floods cut after at most {max(flood_sent) / 2**20:.1f} MiB sent "
        f"(kernel buffers included); trickles cut after {min(trickle_cut):.1f}-"
        f"{max(trickle_cut):.1f} s (bound {HEADER_TIMEOUT:g} s)"
    )
    assert peak < RSS_CEILING_MB
    assert max(flood_sent) < 16 * 2**20
    assert max(trickle_cut) < HEADER_TIMEOUT + 2

    # Too many header fields, each small: 431 in problem+json.
    reader, writer = await connect(edge)
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\n" + many + b"\r\n")
    refused = await answer(reader)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 431"), refused[:200]
    assert PROBLEM.encode() in refused

    async with edge.api() as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_slow_webhook_bodies_do_not_starve_other_webhooks(edge: Lane) -> None:
    slow = []
    for _ in range(4):
        reader, writer = await connect(edge)
        writer.write(
            f"POST {HOOK} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        await writer.drain()
        slow.append((reader, writer))
    opened = time.monotonic()
    answers = []
    async with httpx.AsyncClient(base_url=edge.api_url, timeout=10) as provider:
        # Spread over the first second the slow bodies are held open (their deadline is 3 s).
        for i in range(5):
            answers.append((await provider.post(HOOK, json={"conferencia_id": i})).status_code)
            await asyncio.sleep(0.2)
    held = time.monotonic() - opened
    assert held < WEBHOOK_BODY_TIMEOUT
    assert all(not reader.at_eof() for reader, _ in slow)
    cut = await asyncio.gather(*(answer(reader) for reader, _ in slow))
    cut_after = time.monotonic() - opened
    for _, writer in slow:
        writer.close()
    print(
        f"\nwebhooks while 4 slow bodies were held: {answers}; slow ones cut after {cut_after:.1f}s"
    )
    assert answers == [204] * 5
    assert all(c.startswith(b"HTTP/1.1 408") for c in cut), cut
    assert cut_after < WEBHOOK_BODY_TIMEOUT + 2


async def test_a_client_that_disconnects_mid_body_is_not_a_500(edge: Lane) -> None:
    [api] = [p for p in edge.processes if p.name == "api"]
    _, writer = await connect(edge)
    writer.write(
        (
            "POST /v1/conferences HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_TOKEN}\r\nIdempotency-Key: {uuid.uuid4()}\r\n"
            'Content-Length: 1000\r\n\r\n{"partic'
        ).encode()
    )
    await writer.drain()
    writer.close()
    series = 'method="POST",route="create_conference",status="499"'

    async def counted() -> bool:
        async with edge.api() as client:
            text = (await client.get("/metrics")).text
        return series in text

    await eventually(counted, 10, "the disconnect to be counted as 499")
    async with edge.api() as client:
        text = (await client.get("/metrics")).text
    assert 'route="create_conference",status="500"' not in text
    log = api.log()
    assert "ClientDisconnect" not in log and "Traceback" not in log
    assert '"client_disconnected"' in log


async def test_unknown_paths_wrong_secrets_and_trailing_slashes_are_one_404(edge: Lane) -> None:
    async with httpx.AsyncClient(base_url=edge.api_url, timeout=10) as client:
        answers = [
            await client.post(f"{HOOK}/", json={}),
            await client.post("/v1/webhooks/totalvoice/wrong", json={}),
            await client.get("/nowhere"),
            await client.get("/v1/conferences/"),
        ]
    for response in answers:
        assert response.status_code == 404, response.text
        assert "location" not in response.headers
        assert response.headers["content-type"] == PROBLEM
    assert len({r.content for r in answers}) == 1


async def test_allow_lists_every_method_of_a_path(edge: Lane) -> None:
    async with edge.api() as client:
        response = await client.options("/v1/conferences")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}


async def test_the_servers_own_400_is_problem_json(edge: Lane) -> None:
    reader, writer = await connect(edge)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    refused = await answer(reader)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 400"), refused
    assert PROBLEM.encode() in refused


@pytest.mark.parametrize(
    "fields",
    [
        {"max_duration_seconds": "600"},
        {"max_duration_seconds": 600.0},
        {"record": "yes"},
        {"record": 1},
        {"participants": [{"number": "4832830151", "record": "true"}]},
    ],
)
async def test_a_string_is_not_an_integer_nor_a_number_a_boolean(
    edge: Lane, fields: dict[str, object]
) -> None:
    body = {"participants": [{"number": "4832830151"}], **fields}
    async with edge.api() as client:
        response = await client.post(
            "/v1/conferences", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
