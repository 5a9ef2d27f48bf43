"""The HTTP API over ASGI with in-memory ports: what callers get back, and that bad input is
neither stored nor published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from starlette.types import ASGIApp

from service.entrypoints.http import ApiDeps, create_app
from tests.fakes import FakeClock, FakeCommandPublisher, FakeConferenceStore

TOKEN = {"Authorization": "Bearer s3cret-token"}
VALID = {"participants": [{"number": "4832830151"}, {"number": "+5548999990000"}]}


@pytest.fixture
def store() -> FakeConferenceStore:
    return FakeConferenceStore(FakeClock())


@pytest.fixture
def publisher() -> FakeCommandPublisher:
    return FakeCommandPublisher()


def build_app(
    store: FakeConferenceStore, publisher: FakeCommandPublisher, **overrides: Any
) -> ASGIApp:
    """The api over fakes; `overrides` replace ApiDeps fields (limits, clocks, other fakes)."""
    deps: dict[str, Any] = {
        "ingress": store,
        "conferences": store,
        "webhooks": store,
        "publisher": publisher,
        "tokens_by_caller": {"billing": "s3cret-token", "support": "other-token"},
        "webhook_secret": "hook-secret",
        **overrides,
    }
    return create_app(ApiDeps(**deps))


@asynccontextmanager
async def api_client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    # An unexpected error is answered by the app (a 500 problem); do not re-raise it here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


@pytest.fixture
async def client(
    store: FakeConferenceStore, publisher: FakeCommandPublisher
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(build_app(store, publisher)) as client:
        yield client


async def post(
    client: httpx.AsyncClient, body: object, key: str = "k-1", **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/conferences", json=body, headers={**TOKEN, "Idempotency-Key": key, **headers}
    )


async def test_valid_command_is_published_and_answered_202(
    client: httpx.AsyncClient, publisher: FakeCommandPublisher
) -> None:
    response = await post(client, VALID)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert response.headers["location"] == f"/v1/conferences/{body['id']}"
    [command] = publisher.published
    assert str(command.conference_id) == body["id"]
    assert command.caller == "billing"
    assert [p.number for p in command.payload.participants] == ["+554832830151", "+5548999990000"]


async def test_seed_form_is_normalized_to_one_participant(
    client: httpx.AsyncClient, publisher: FakeCommandPublisher
) -> None:
    response = await post(
        client,
        {
            "numero_destino": "4811111111",
            "url_conferencia": "http://foo.bar/c.mp3",
            "bina": "4832830151",
        },
    )
    assert response.status_code == 202
    payload = publisher.published[0].payload
    assert [p.number for p in payload.participants] == ["+554811111111"]
    assert payload.caller_id == "+554832830151"


async def test_same_key_and_body_replays_the_first_answer(
    client: httpx.AsyncClient, publisher: FakeCommandPublisher
) -> None:
    first = await post(client, VALID)
    again = await post(client, VALID)

    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert {c.command_id for c in publisher.published} == {publisher.published[0].command_id}


async def test_same_key_with_another_body_is_refused(client: httpx.AsyncClient) -> None:
    await post(client, VALID)
    response = await post(client, {"participants": [{"number": "4832830152"}]})
    assert response.status_code == 422
    assert response.json()["type"].endswith("/idempotency-key-reused")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"participants": []}, "participants"),
        ({"participants": [{"number": "12345"}]}, "participants.0.number"),
        ({"participants": [{"number": "4832830151"}, {"number": "+554832830151"}]}, "participants"),
        ({"participants": [{"number": f"48328301{i:02}"} for i in range(11)]}, "participants"),
        ({**VALID, "surprise": True}, "surprise"),
        ({**VALID, "reference": "x" * 201}, "reference"),
        ({**VALID, "metadata": {"blob": "x" * 5000}}, "metadata"),
        ({**VALID, "metadata": {"n": 1}}, "metadata.n"),
        ({**VALID, "max_duration_seconds": 5}, "max_duration_seconds"),
    ],
)
async def test_invalid_fields_get_422_with_the_field_and_nothing_is_published(
    client: httpx.AsyncClient, publisher: FakeCommandPublisher, body: object, field: str
) -> None:
    response = await post(client, body)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert publisher.published == []


async def test_malformed_requests_get_clear_problems(
    client: httpx.AsyncClient, publisher: FakeCommandPublisher
) -> None:
    no_token = await client.post("/v1/conferences", json=VALID, headers={"Idempotency-Key": "k"})
    wrong_token = await post(client, VALID, Authorization="Bearer nope")
    no_key = await client.post("/v1/conferences", json=VALID, headers=TOKEN)
    not_json = await client.post(
        "/v1/conferences",
        content=b"{nope",
        headers={**TOKEN, "Idempotency-Key": "k", "Content-Type": "application/json"},
    )
    wrong_type = await client.post(
        "/v1/conferences",
        content=b"number=1",
        headers={
            **TOKEN,
            "Idempotency-Key": "k",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    too_big = await post(client, {**VALID, "reference": "x" * 70_000})

    assert [
        r.status_code for r in (no_token, wrong_token, no_key, not_json, wrong_type, too_big)
    ] == [
        401,
        401,
        400,
        400,
        415,
        413,
    ]
    for response in (no_token, wrong_token, no_key, not_json, wrong_type, too_big):
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert {"type", "title", "status", "detail"} <= problem.keys()
    assert publisher.published == []


async def test_unavailable_bus_gets_503_and_a_retry_with_the_same_key_succeeds(
    client: httpx.AsyncClient, publisher: FakeCommandPublisher
) -> None:
    publisher.available = False
    down = await post(client, VALID)
    publisher.available = True
    retried = await post(client, VALID)

    assert down.status_code == 503
    assert down.headers["retry-after"]
    assert retried.status_code == 202
    assert [str(c.conference_id) for c in publisher.published] == [retried.json()["id"]]


async def test_another_callers_conference_is_not_found(
    client: httpx.AsyncClient, store: FakeConferenceStore
) -> None:
    response = await client.get(
        "/v1/conferences/6f1c1c52-5d0e-4a8e-9a57-3f1f4f0b7c11", headers=TOKEN
    )
    assert response.status_code == 404
    assert (await client.get("/v1/conferences/not-a-uuid", headers=TOKEN)).status_code == 404


async def test_webhook_with_a_wrong_secret_is_not_found(client: httpx.AsyncClient) -> None:
    wrong = await client.post("/v1/webhooks/totalvoice/guess", json={"conferencia_id": 1})
    right = await client.post("/v1/webhooks/totalvoice/hook-secret", json={"conferencia_id": 1})
    assert (wrong.status_code, right.status_code) == (404, 204)


async def test_unknown_route_is_a_problem_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_requests_are_measured_by_the_route_that_served_them(
    client: httpx.AsyncClient,
) -> None:
    from prometheus_client import REGISTRY

    def count(method: str, route: str, status: str) -> float:
        labels = {"method": method, "route": route, "status": status}
        value = REGISTRY.get_sample_value("conference_http_request_duration_seconds_count", labels)
        return value or 0.0

    before = [
        count("GET", "list_conferences", "200"),
        count("DELETE", "cancel_conference", "404"),
        count("PUT", "create_conference", "405"),
    ]
    await client.get("/v1/conferences", headers=TOKEN)
    await client.delete("/v1/conferences/6f1c1c52-5d0e-4a8e-9a57-3f1f4f0b7c11", headers=TOKEN)
    await client.put("/v1/conferences", headers=TOKEN)
    after = [
        count("GET", "list_conferences", "200"),
        count("DELETE", "cancel_conference", "404"),
        count("PUT", "create_conference", "405"),
    ]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


def requests_counted(method: str, route: str, status: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "conference_http_request_duration_seconds_count",
            {"method": method, "route": route, "status": status},
        )
        or 0.0
    )


async def test_requests_are_counted_by_route_template_never_by_path(
    client: httpx.AsyncClient,
) -> None:
    before = {
        "created": requests_counted("POST", "create_conference", "202"),
        "wrong_method": requests_counted("PUT", "create_conference", "405"),
        "nowhere": requests_counted("GET", "unmatched", "404"),
        "webhook": requests_counted("POST", "provider_webhook", "404"),
    }

    assert (await post(client, VALID)).status_code == 202
    assert (await client.put("/v1/conferences", headers=TOKEN)).status_code == 405
    assert (await client.get("/no/such/path", headers=TOKEN)).status_code == 404
    assert (await client.post("/v1/webhooks/totalvoice/guessed-secret", json={})).status_code == 404

    assert requests_counted("POST", "create_conference", "202") == before["created"] + 1
    assert requests_counted("PUT", "create_conference", "405") == before["wrong_method"] + 1
    assert requests_counted("GET", "unmatched", "404") == before["nowhere"] + 1
    assert requests_counted("POST", "provider_webhook", "404") == before["webhook"] + 1
    assert "guessed-secret" not in generate_latest(REGISTRY).decode()
