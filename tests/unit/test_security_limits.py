"""Per-caller admission over the ASGI app with fakes and a hand-driven clock: the request rate,
the participants-a-minute cap (replays free), and the settings that configure both."""

from __future__ import annotations

import uuid

import httpx
import pytest

from service.entrypoints.limits import ApiLimits, TokenBucket
from service.settings import ApiSettings
from tests.fakes import FakeClock, FakeCommandPublisher, FakeConferenceStore
from tests.unit.test_http_api import api_client, build_app

LIMIT_SETTINGS = (
    "CALLER_RATE_LIMIT_PER_SECOND",
    "CALLER_RATE_LIMIT_BURST",
    "CALLER_PARTICIPANTS_PER_MINUTE",
    "WEBHOOK_MAX_BODY_BYTES",
    "WEBHOOK_MAX_CONCURRENCY",
)
BILLING = {"Authorization": "Bearer s3cret-token"}
SUPPORT = {"Authorization": "Bearer other-token"}


class Ticker:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def body(participants: int, first: int = 0) -> dict[str, object]:
    return {"participants": [{"number": f"48328{first + i:05d}"} for i in range(participants)]}


async def create(
    client: httpx.AsyncClient,
    payload: object,
    key: str | None = None,
    auth: dict[str, str] = BILLING,
) -> httpx.Response:
    return await client.post(
        "/v1/conferences",
        json=payload,
        headers={**auth, "Idempotency-Key": key or str(uuid.uuid4())},
    )


def assert_rate_limited(response: httpx.Response, kind: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert problem["type"] == f"https://conference-service/problems/{kind}"
    assert problem["status"] == 429


def test_token_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2, capacity=4, now=0)
    assert [bucket.take(1, now=0) for _ in range(4)] == [0, 0, 0, 0]
    assert bucket.take(1, now=0) == pytest.approx(0.5)
    assert bucket.take(1, now=0.5) == 0
    assert bucket.take(5, now=100) == pytest.approx(0.5)  # never more than the capacity
    bucket.give_back(3, now=100)
    assert bucket.tokens == 4


async def test_a_caller_over_its_request_rate_gets_429_with_retry_after() -> None:
    ticker = Ticker()
    limits = ApiLimits(requests_per_second=2, request_burst=3)
    store = FakeConferenceStore(FakeClock())
    app = build_app(store, FakeCommandPublisher(), limits=limits, monotonic=ticker)
    async with api_client(app) as client:
        burst = [await client.get("/v1/conferences", headers=BILLING) for _ in range(4)]
        other_caller = await client.get("/v1/conferences", headers=SUPPORT)
        health = await client.get("/healthz")
        ticker.now += 0.5
        later = await client.get("/v1/conferences", headers=BILLING)

    assert [r.status_code for r in burst] == [200, 200, 200, 429]
    assert_rate_limited(burst[-1], "rate-limited")
    assert burst[-1].headers["retry-after"] == "1"
    assert other_caller.status_code == 200  # buckets are per caller
    assert health.status_code == 200  # health and metrics are not limited
    assert later.status_code == 200


async def test_every_conference_route_counts_against_the_rate() -> None:
    limits = ApiLimits(requests_per_second=1, request_burst=4)
    app = build_app(
        FakeConferenceStore(FakeClock()), FakeCommandPublisher(), limits=limits, monotonic=Ticker()
    )
    some_id = "6f1c1c52-5d0e-4a8e-9a57-3f1f4f0b7c11"
    async with api_client(app) as client:
        statuses = [
            (await create(client, body(1))).status_code,
            (await client.get("/v1/conferences", headers=BILLING)).status_code,
            (await client.get(f"/v1/conferences/{some_id}", headers=BILLING)).status_code,
            (await client.delete(f"/v1/conferences/{some_id}", headers=BILLING)).status_code,
            (await client.get(f"/v1/conferences/{some_id}", headers=BILLING)).status_code,
            (await create(client, body(1))).status_code,
        ]
    assert statuses == [202, 200, 404, 404, 429, 429]


async def test_participants_a_minute_are_capped_per_caller_and_replays_are_free() -> None:
    ticker = Ticker()
    limits = ApiLimits(participants_per_minute=12)
    publisher = FakeCommandPublisher()
    app = build_app(FakeConferenceStore(FakeClock()), publisher, limits=limits, monotonic=ticker)
    async with api_client(app) as client:
        first = await create(client, body(8), key="big")
        replays = [await create(client, body(8), key="big") for _ in range(3)]
        fits = await create(client, body(4, first=20))
        over = await create(client, body(1, first=40))
        replay_when_spent = await create(client, body(8), key="big")
        other_caller = await create(client, body(10), auth=SUPPORT)
        ticker.now += 5  # 12 a minute: one participant every 5 s
        refilled = await create(client, body(1, first=40))

    assert first.status_code == 202
    assert [r.status_code for r in replays] == [202, 202, 202]
    assert all(r.headers["idempotent-replayed"] == "true" for r in replays)
    assert fits.status_code == 202
    assert_rate_limited(over, "participant-rate-limited")
    assert over.headers["retry-after"] == "5"
    assert replay_when_spent.status_code == 202
    assert other_caller.status_code == 202
    assert refilled.status_code == 202
    # The refused request was not published; each accepted conference was (replays re-publish).
    assert {str(c.conference_id) for c in publisher.published} == {
        first.json()["id"],
        fits.json()["id"],
        other_caller.json()["id"],
        refilled.json()["id"],
    }


async def test_a_replay_seen_by_another_process_is_refunded() -> None:
    # Two api pods share the store but not their budgets: the second learns of the replay only
    # from the store, after charging, and gives the participants back.
    store = FakeConferenceStore(FakeClock())
    limits = ApiLimits(participants_per_minute=10)
    pod_a = build_app(store, FakeCommandPublisher(), limits=limits, monotonic=Ticker())
    pod_b = build_app(store, FakeCommandPublisher(), limits=limits, monotonic=Ticker())
    async with api_client(pod_a) as a, api_client(pod_b) as b:
        assert (await create(a, body(6), key="k")).status_code == 202
        replay = await create(b, body(6), key="k")
        new = await create(b, body(10, first=50))
    assert replay.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert new.status_code == 202


async def test_refused_and_failed_creates_do_not_use_the_budget() -> None:
    store = FakeConferenceStore(FakeClock())
    limits = ApiLimits(participants_per_minute=10)
    app = build_app(store, FakeCommandPublisher(), limits=limits, monotonic=Ticker())
    async with api_client(app) as client:
        invalid = await create(client, {"participants": [{"number": "12"}] * 10})
        assert (await create(client, body(3), key="reused")).status_code == 202
        reused = await create(client, body(3, first=10), key="reused")
        store.available = False
        down = await create(client, body(7, first=20))
        store.available = True
        fits = await create(client, body(7, first=20))
    assert [invalid.status_code, reused.status_code, down.status_code, fits.status_code] == [
        422,
        422,
        503,
        202,
    ]


def test_limits_are_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("API_TOKENS", "a:b")
    monkeypatch.setenv("WEBHOOK_SECRET", "s")
    defaults = ApiLimits.from_settings(ApiSettings())
    assert defaults == ApiLimits()
    assert (defaults.requests_per_second, defaults.request_burst) == (50, 100)
    assert defaults.participants_per_minute == 600
    assert (defaults.webhook_max_body_bytes, defaults.webhook_max_concurrency) == (16384, 4)

    monkeypatch.setenv("CALLER_RATE_LIMIT_PER_SECOND", "7.5")
    monkeypatch.setenv("CALLER_RATE_LIMIT_BURST", "15")
    monkeypatch.setenv("CALLER_PARTICIPANTS_PER_MINUTE", "120")
    monkeypatch.setenv("WEBHOOK_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("WEBHOOK_MAX_CONCURRENCY", "2")
    assert ApiLimits.from_settings(ApiSettings()) == ApiLimits(7.5, 15, 120, 4096, 2)

    monkeypatch.setenv("CALLER_PARTICIPANTS_PER_MINUTE", "9")  # below one full conference
    with pytest.raises(ValueError, match="caller_participants_per_minute"):
        ApiSettings()
