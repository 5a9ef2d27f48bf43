"""Security end to end, against real processes: callers see only their own conferences, limits
answer 429, bad and hostile input gets a 4xx, a webhook flood leaves the conference routes
answering, and no secret reaches a log line or /metrics, whatever path a request takes."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Base, Lane, open_lane
from tests.waiting import eventually

# Distinctive secrets, new each run, so a search of the logs for them means something.
RUN = uuid.uuid4().hex
TOKENS = {
    "e2e": f"e2e-tok-{RUN}",
    "other": f"other-tok-{RUN[::-1]}",
    "greedy": f"greedy-tok-{RUN[:16]}",
    "quota": f"quota-tok-{RUN[16:]}",
}
WEBHOOK_SECRET = f"hook-secret-{RUN[8:24]}"
PROVIDER_TOKEN = f"provider-token-{RUN[4:20]}"
SECRETS = [*TOKENS.values(), WEBHOOK_SECRET, PROVIDER_TOKEN]

RATE, BURST, PARTICIPANTS_PER_MINUTE = 20, 20, 20
PROBLEMS = "https://conference-service/problems/"
QUICK = {"rules": [{"match": "", "status": "atendida", "ring_seconds": 2, "talk_seconds": 10}]}


@pytest.fixture(scope="module")
async def secure(base: Base) -> AsyncIterator[Lane]:
    lane = await open_lane(
        base,
        # The simulator accepts the lane's usual token and this one; the worker sends this one.
        simulator_args=("--token", PROVIDER_TOKEN),
        TOTALVOICE_ACCESS_TOKEN=PROVIDER_TOKEN,
        API_TOKENS=",".join(f"{caller}:{token}" for caller, token in TOKENS.items()),
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        CALLER_RATE_LIMIT_PER_SECOND=str(RATE),
        CALLER_RATE_LIMIT_BURST=str(BURST),
        CALLER_PARTICIPANTS_PER_MINUTE=str(PARTICIPANTS_PER_MINUTE),
        WEBHOOK_MAX_CONCURRENCY="2",
    )
    async with lane.simulator() as sim:
        assert (await sim.put("/_simulator/scenario", json=QUICK)).status_code == 200
    yield lane
    assert not await lane.close()


def api(lane: Lane, caller: str | None = "e2e", **kwargs: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {TOKENS[caller]}"} if caller else {}
    return httpx.AsyncClient(base_url=lane.api_url, timeout=10, headers=headers, **kwargs)


def body(*numbers: str, reference: str = "security") -> dict[str, Any]:
    return {"participants": [{"number": n} for n in numbers], "reference": reference}


async def create(
    client: httpx.AsyncClient, payload: object, key: str | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/conferences", json=payload, headers={"Idempotency-Key": key or str(uuid.uuid4())}
    )


def assert_problem(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["status"]) == (PROBLEMS + kind, status)


async def wait_status(client: httpx.AsyncClient, conference_id: str, *wanted: str) -> Any:
    async def reached() -> Any:
        view = (await client.get(f"/v1/conferences/{conference_id}")).json()
        return view if view["status"] in wanted else None

    return await eventually(reached, 60, f"{conference_id} to be {wanted}", interval=0.25)


async def test_a_caller_sees_and_touches_only_its_own_conferences(secure: Lane) -> None:
    key = f"shared-key-{uuid.uuid4()}"
    async with api(secure, "e2e") as e2e, api(secure, "other") as other:
        mine = await create(e2e, body("4832830151", "4832830152"), key=key)
        assert mine.status_code == 202
        mine_id = mine.json()["id"]
        # The same key is the other caller's own: a new conference, not a replay nor a 422.
        theirs = await create(other, body("4832830153"), key=key)
        assert theirs.status_code == 202
        assert "idempotent-replayed" not in theirs.headers
        theirs_id = theirs.json()["id"]
        assert theirs_id != mine_id
        replay = await create(e2e, body("4832830151", "4832830152"), key=key)
        assert (replay.status_code, replay.json()["id"]) == (202, mine_id)
        assert replay.headers["idempotent-replayed"] == "true"

        await wait_status(e2e, mine_id, "in_progress", "completed")
        await wait_status(other, theirs_id, "in_progress", "completed")
        unknown = await other.get(f"/v1/conferences/{uuid.uuid4()}")
        assert_problem(unknown, 404, "not-found")
        for client, foreign in ((other, mine_id), (e2e, theirs_id)):
            read = await client.get(f"/v1/conferences/{foreign}")
            assert_problem(read, 404, "not-found")
            assert read.content == unknown.content  # nothing tells "exists, not yours"
            assert_problem(await client.delete(f"/v1/conferences/{foreign}"), 404, "not-found")
        listed_by_other = (await other.get("/v1/conferences", params={"limit": 200})).json()
        listed_by_e2e = (await e2e.get("/v1/conferences", params={"limit": 200})).json()
        assert [c["id"] for c in listed_by_other["items"]] == [theirs_id]
        assert mine_id in {c["id"] for c in listed_by_e2e["items"]}
        assert theirs_id not in {c["id"] for c in listed_by_e2e["items"]}
        # The attempted cancel by the other caller changed nothing.
        view = (await e2e.get(f"/v1/conferences/{mine_id}")).json()
        assert view["status"] in ("in_progress", "completed")
    db = await secure.connect()
    try:
        canceled = await db.fetchval(
            "SELECT cancel_requested_at FROM conference WHERE id = $1", uuid.UUID(mine_id)
        )
    finally:
        await db.close()
    assert canceled is None


async def test_unauthenticated_requests_get_the_same_401_everywhere(secure: Lane) -> None:
    some_id = uuid.uuid4()
    answers = []
    async with api(secure, None) as anonymous:
        for authorization in (None, "Bearer nope", f"Bearer {TOKENS['e2e']}x", "Basic e2e"):
            headers = {"Authorization": authorization} if authorization else {}
            answers += [
                await anonymous.get("/v1/conferences", headers=headers),
                await anonymous.get(f"/v1/conferences/{some_id}", headers=headers),
                await anonymous.delete(f"/v1/conferences/{some_id}", headers=headers),
                await anonymous.post(
                    "/v1/conferences",
                    json=body("4832830151"),
                    headers={**headers, "Idempotency-Key": "k"},
                ),
            ]
    for response in answers:
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert len({r.content for r in answers}) == 1


async def test_a_caller_over_its_request_rate_gets_429_and_others_do_not(secure: Lane) -> None:
    async with api(secure, "greedy") as greedy, api(secure, "other") as other:
        burst = await asyncio.gather(*(greedy.get("/v1/conferences") for _ in range(3 * BURST)))
        meanwhile = await other.get("/v1/conferences")
        limited = [r for r in burst if r.status_code == 429]
        assert {r.status_code for r in burst} == {200, 429}
        assert len(limited) >= BURST
        for response in limited:
            assert_problem(response, 429, "rate-limited")
            assert int(response.headers["retry-after"]) >= 1
        assert meanwhile.status_code == 200
        await asyncio.sleep(int(limited[0].headers["retry-after"]))
        assert (await greedy.get("/v1/conferences")).status_code == 200


async def test_participants_over_the_minute_cap_get_429_and_replays_are_free(
    secure: Lane,
) -> None:
    tens = [[f"48333{c}{i:04d}" for i in range(10)] for c in range(3)]
    async with api(secure, "quota") as quota:
        first = await create(quota, body(*tens[0]), key="quota-first")
        second = await create(quota, body(*tens[1]))
        over = await create(quota, body(tens[2][0]))
        replay = await create(quota, body(*tens[0]), key="quota-first")
    assert (first.status_code, second.status_code) == (202, 202)
    assert_problem(over, 429, "participant-rate-limited")
    assert int(over.headers["retry-after"]) >= 1
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (202, "true")
    db = await secure.connect()
    try:
        stored = await db.fetchval(
            "SELECT count(*) FROM ingress_request WHERE caller = 'quota'",
        )
    finally:
        await db.close()
    assert stored == 2  # the refused request stored nothing


async def test_bad_bodies_are_refused_with_their_problem(secure: Lane) -> None:
    async def stream(size: int) -> AsyncIterator[bytes]:
        yield b'{"participants": [{"number": "4832830151"}], "reference": "'
        for _ in range(size // 1024):
            yield b"x" * 1024
        yield b'"}'

    async with api(secure, "e2e") as e2e:
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        json_type = {**headers, "Content-Type": "application/json"}
        assert_problem(
            await e2e.post("/v1/conferences", content=b"{nope", headers=json_type),
            400,
            "malformed-json",
        )
        assert_problem(
            await e2e.post("/v1/conferences", json=body("4832830151")),
            400,
            "idempotency-key-required",
        )
        assert_problem(
            await e2e.post(
                "/v1/conferences",
                content=b"number=1",
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            ),
            415,
            "unsupported-media-type",
        )
        assert_problem(
            await e2e.post("/v1/conferences", content=stream(70_000), headers=json_type),
            413,
            "request-body-too-large",
        )
        assert_problem(
            await create(e2e, {**body("4832830151"), "reference": "x" * 70_000}),
            413,
            "request-body-too-large",
        )
        invalid = await create(e2e, {"participants": [{"number": "12"}], "surprise": 1})
        assert_problem(invalid, 422, "validation")
        assert {"participants.0.number", "surprise"} <= {
            e["field"] for e in invalid.json()["errors"]
        }
        nul = await create(e2e, {**body("4832830151"), "reference": "a\x00b"})
        assert_problem(nul, 422, "validation")
        query = await e2e.get("/v1/conferences", params={"reference": "a\x00", "limit": "²"})
        assert_problem(query, 422, "validation")


HOSTILE_WEBHOOKS: list[tuple[bytes, int]] = [
    (b'{"conferencia_id": 123456789012345678901234567890, "chamada_id": -1}', 204),
    (b'{"conferencia_id": "' + b"9" * 5000 + b'"}', 204),
    (b'{"conferencia_id": "1; DROP TABLE conference; --", "id": "\' OR \'1\'=\'1"}', 204),
    (b'{"conferencia_id": {"$ne": null}, "chamada_id": [1], "evento_conferencia": {"x": 1}}', 204),
    (b'{"x": "{{7*7}} ${jndi:ldap://evil/a} $(rm -rf /) `id`", "y": 1e308}', 204),
    (b'{"deep": ' + b"[" * 40 + b"]" * 40 + b"}", 422),
    (b'{"nul": "\\u0000"}', 422),
    (b"[1, 2]", 422),
    (b'{"a": 1e400}', 400),
    (b"<xml/>", 400),
    (b'{"pad": "' + b"x" * 17_000 + b'"}', 413),
]


async def test_hostile_webhooks_get_204_or_4xx_and_only_digit_ids_are_kept(secure: Lane) -> None:
    hook = f"/v1/webhooks/totalvoice/{WEBHOOK_SECRET}"
    async with api(secure, None) as provider:
        for content, status in HOSTILE_WEBHOOKS:
            response = await provider.post(hook, content=content)
            assert response.status_code == status, (content[:80], response.text)
    db = await secure.connect()
    try:
        rows = await db.fetch(
            "SELECT provider_conference_id, provider_call_id FROM provider_webhook"
        )
        tables = await db.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = 'conference'")
    finally:
        await db.close()
    assert tables == 1
    assert len(rows) >= sum(1 for _, s in HOSTILE_WEBHOOKS if s == 204)
    for row in rows:
        for ref in (row["provider_conference_id"], row["provider_call_id"]):
            assert ref is None or (ref.isascii() and ref.isdigit()), ref


async def test_a_webhook_flood_cannot_starve_the_conference_routes(secure: Lane) -> None:
    hook = f"/v1/webhooks/totalvoice/{WEBHOOK_SECRET}"
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    [api_process] = [p for p in secure.processes if p.name == "api"]
    async with api(secure, "e2e") as e2e, api(secure, None, limits=limits) as provider:
        conference_id = (await create(e2e, body("4832830177"))).json()["id"]
        log_before = len(api_process.log())
        flooding = True
        webhook_answers: list[tuple[int, str | None]] = []

        async def flood() -> None:
            async def one(i: int) -> None:
                response = await provider.post(hook, json={"conferencia_id": i, "chamada_id": i})
                webhook_answers.append((response.status_code, response.headers.get("retry-after")))

            while flooding:
                await asyncio.gather(*(one(i) for i in range(100)))

        task = asyncio.create_task(flood())
        reads: list[tuple[int, float]] = []
        for _ in range(20):
            started = time.perf_counter()
            response = await e2e.get(f"/v1/conferences/{conference_id}")
            reads.append((response.status_code, time.perf_counter() - started))
            await asyncio.sleep(0.1)
        flooding = False
        await task
        after = await provider.post(hook, json={"conferencia_id": 1})

    # The api's own timing (this test's client shares its loop with the flood it sends).
    handled = [json.loads(line) for line in api_process.log()[log_before:].splitlines()]
    served = [h for h in handled if h.get("event") == "request_handled"]
    reads_ms = [h["duration_ms"] for h in served if h["route"] == "get_conference"]
    turned_away_ms = [
        h["duration_ms"] for h in served if h["route"] == "provider_webhook" and h["status"] == 503
    ]
    saturated = [a for a in webhook_answers if a[0] == 503]
    print(
        f"\nwebhook flood: {len(webhook_answers)} callbacks, {len(saturated)} turned away (503, "
        f"max {max(turned_away_ms, default=0):.1f} ms in the api); conference reads during it: "
        f"{len(reads_ms)}, max {max(reads_ms):.1f} ms in the api, "
        f"{max(t for _, t in reads) * 1000:.0f} ms at the client"
    )
    assert {status for status, _ in webhook_answers} <= {204, 503}
    assert saturated, "the flood never saturated the webhook route"
    assert all(retry_after == "1" for _, retry_after in saturated)
    # A webhook is read (within its deadline) before it asks for a slot, so that slow bodies
    # cannot hold the slots: turning one away costs its read, on a loop busy with the flood.
    assert statistics.median(turned_away_ms) < 100
    assert all(status == 200 for status, _ in reads)
    assert len(reads_ms) == len(reads)
    assert max(reads_ms) < 250
    assert max(t for _, t in reads) < 2.0
    assert after.status_code == 204


async def test_no_secret_reaches_a_log_line_or_metrics(secure: Lane) -> None:
    """Every path a request can take, failures included, then every line every process wrote."""
    seen: list[bytes] = []
    async with (
        api(secure, "e2e") as e2e,
        api(secure, None) as anonymous,
        secure.simulator() as sim,
    ):
        # Secrets presented in the wrong place.
        for secret in SECRETS:
            seen.append(
                (
                    await anonymous.get(
                        "/v1/conferences", headers={"Authorization": f"Bearer {secret}x"}
                    )
                ).content
            )
            seen.append(
                (await anonymous.post(f"/v1/webhooks/totalvoice/{secret}x", json={})).content
            )
        seen.append(
            (
                await anonymous.get(
                    f"/v1/conferences/{PROVIDER_TOKEN}",
                    headers={"Authorization": f"Bearer {TOKENS['other']}"},
                )
            ).content
        )
        # Right secret, bad and good bodies.
        hook = f"/v1/webhooks/totalvoice/{WEBHOOK_SECRET}"
        for content in (b"{", b"[]", b'{"conferencia_id": 5}', b"x" * 20_000):
            seen.append((await anonymous.post(hook, content=content)).content)
        # Bad conference bodies.
        for payload in ({"participants": []}, {"participants": [{"number": PROVIDER_TOKEN}]}):
            seen.append((await create(e2e, payload)).content)
        seen.append(
            (
                await e2e.post(
                    "/v1/conferences",
                    content=b"{",
                    headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
                )
            ).content
        )
        # A conference that completes.
        ok = await create(e2e, body("4832830161", "4832830162"))
        assert ok.status_code == 202
        await wait_status(e2e, ok.json()["id"], "completed")
        # The provider failing: 5xx and 429 on the polls and the dials, then recovering.
        faults = {
            **QUICK,
            "errors": {
                "GET /conferencia/{id}": {"500": 0.4, "503": 0.2, "429": 0.2},
                "POST /conferencia/{id}": {"502": 0.3},
                "POST /conferencia": {"500": 0.5},
            },
        }
        assert (await sim.put("/_simulator/scenario", json=faults)).status_code == 200
        shaky = await create(e2e, body("4832830163", "4832830164"))
        assert shaky.status_code == 202

        async def faults_seen() -> bool:
            requests = (await sim.get("/_simulator/ledger")).json()["requests"]
            answered = {status for counts in requests.values() for status in counts}
            return bool(answered & {"429", "500", "502", "503"})

        await eventually(faults_seen, 30, "the simulator to answer some faults")
        await asyncio.sleep(2)
        assert (await sim.put("/_simulator/scenario", json=QUICK)).status_code == 200
        await wait_status(e2e, shaky.json()["id"], "completed", "failed")
        metrics = [(await anonymous.get("/metrics")).text]
        for process in secure.processes:
            if process.metrics_port:
                async with httpx.AsyncClient(timeout=10) as scraper:
                    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
                    metrics.append((await scraper.get(url)).text)

    database_url = secure.database_url
    userinfo = database_url.split("//", 1)[1].split("@", 1)[0] + "@"
    logs = {
        process.name + ":" + str(process.log_path.name): process.log()
        for process in secure.processes
    }
    assert any(
        "provider_request_retried" in text or "poll_failed" in text for text in logs.values()
    )
    lines = sum(text.count("\n") for text in logs.values())
    print(
        f"\nsearched {lines} log lines of {len(logs)} processes and {len(metrics)} /metrics pages"
    )
    for where, text in [*logs.items(), *(("metrics", m) for m in metrics)]:
        for secret in [*SECRETS, database_url, userinfo]:
            assert secret not in text, f"{where} holds a secret"
    for content in seen:
        for secret in SECRETS:
            assert secret.encode() not in content
