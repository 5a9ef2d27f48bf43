"""/openapi.json describes every route the app serves, with the problem answers each can give;
the answers the app really gives match it (the e2e fuzz test checks the real views too)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from starlette.routing import Route

from service.entrypoints.http import ApiDeps, create_app
from service.entrypoints.limits import ApiLimits
from service.entrypoints.openapi import OPENAPI
from tests.fakes import FakeClock, FakeCommandPublisher, FakeConferenceStore
from tests.unit.test_http_api import VALID, api_client, build_app

TOKEN = {"Authorization": "Bearer s3cret-token"}
CONFERENCE_ROUTES = {
    ("post", "/v1/conferences"),
    ("get", "/v1/conferences"),
    ("get", "/v1/conferences/{conference_id}"),
    ("delete", "/v1/conferences/{conference_id}"),
}


def build_deps() -> ApiDeps:
    store = FakeConferenceStore(FakeClock())
    return ApiDeps(store, store, store, FakeCommandPublisher(), {"a": "b"}, "hook-secret")


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in OPENAPI["paths"].items()
        for method, operation in item.items()
    }


def validate(schema: dict[str, Any], instance: object) -> None:
    """Validate against a schema of the document, its $refs resolved within the document."""
    jsonschema.Draft202012Validator(
        {**schema, "components": OPENAPI["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ).validate(instance)


def test_every_route_is_described_and_nothing_else() -> None:
    app = create_app(build_deps())
    served = {
        (method.lower(), route.path)
        for route in app.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served == set(operations())


def test_the_document_is_a_valid_openapi_3_1_description() -> None:
    schema = schemathesis.openapi.from_dict(OPENAPI)
    loaded = [result.ok() for result in schema.get_all_operations()]
    assert len(loaded) == len(operations())
    for component in OPENAPI["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(component)


@pytest.mark.parametrize(("method", "path"), sorted(CONFERENCE_ROUTES))
def test_conference_routes_declare_their_problems(method: str, path: str) -> None:
    operation = operations()[(method, path)]
    assert "security" not in operation  # the document's bearer requirement applies
    responses = operation["responses"]
    assert {"401", "429", "503"} <= responses.keys()
    for status, response in responses.items():
        if status.startswith(("4", "5")):
            assert list(response["content"]) == ["application/problem+json"]
    for status in ("429", "503"):
        assert responses[status]["headers"]["Retry-After"]["required"] is True


def test_create_declares_every_bad_input_answer() -> None:
    responses = operations()[("post", "/v1/conferences")]["responses"]
    assert set(responses) == {"202", "400", "401", "408", "413", "415", "422", "429", "503"}


def test_unauthenticated_routes_say_so() -> None:
    for (_method, path), operation in operations().items():
        if not path.startswith("/v1/conferences"):
            assert operation["security"] == [], path


async def test_the_answers_the_app_gives_match_the_document() -> None:
    store = FakeConferenceStore(FakeClock())
    publisher = FakeCommandPublisher()
    limits = ApiLimits(requests_per_second=0.001, request_burst=9)
    app = build_app(store, publisher, limits=limits)
    some_id = uuid.uuid4()
    key = {"Idempotency-Key": "k"}
    json_type = {"Content-Type": "application/json"}
    async with api_client(app) as client:
        answers: list[tuple[str, str, httpx.Response]] = [
            ("post", "/v1/conferences", await client.post("/v1/conferences", json=VALID)),
            (
                "post",
                "/v1/conferences",
                await client.post("/v1/conferences", json=VALID, headers={**TOKEN, **key}),
            ),
            (
                "post",
                "/v1/conferences",
                await client.post("/v1/conferences", json=VALID, headers=TOKEN),
            ),
            (
                "post",
                "/v1/conferences",
                await client.post(
                    "/v1/conferences", content=b"{", headers={**TOKEN, **key, **json_type}
                ),
            ),
            (
                "post",
                "/v1/conferences",
                await client.post(
                    "/v1/conferences", content=b"x" * 70_000, headers={**TOKEN, **key, **json_type}
                ),
            ),
            (
                "post",
                "/v1/conferences",
                await client.post("/v1/conferences", content=b"{}", headers={**TOKEN, **key}),
            ),
            (
                "post",
                "/v1/conferences",
                await client.post("/v1/conferences", json={}, headers={**TOKEN, **key}),
            ),
            (
                "get",
                "/v1/conferences",
                await client.get("/v1/conferences", params={"limit": 0}, headers=TOKEN),
            ),
            (
                "get",
                "/v1/conferences/{conference_id}",
                await client.get(f"/v1/conferences/{some_id}", headers=TOKEN),
            ),
            (
                "delete",
                "/v1/conferences/{conference_id}",
                await client.delete(f"/v1/conferences/{some_id}", headers=TOKEN),
            ),
            (
                "post",
                "/v1/webhooks/totalvoice/{secret}",
                await client.post("/v1/webhooks/totalvoice/x", json={}),
            ),
            (
                "post",
                "/v1/webhooks/totalvoice/{secret}",
                await client.post("/v1/webhooks/totalvoice/hook-secret", content=b"["),
            ),
            (
                "post",
                "/v1/webhooks/totalvoice/{secret}",
                await client.post("/v1/webhooks/totalvoice/hook-secret", json=[]),
            ),
            (
                "post",
                "/v1/webhooks/totalvoice/{secret}",
                await client.post("/v1/webhooks/totalvoice/hook-secret", content=b"1" * 20_000),
            ),
            (
                "post",
                "/v1/webhooks/totalvoice/{secret}",
                await client.post("/v1/webhooks/totalvoice/hook-secret", json={"id": 1}),
            ),
            ("get", "/healthz", await client.get("/healthz")),
            ("get", "/readyz", await client.get("/readyz")),
            ("get", "/openapi.json", await client.get("/openapi.json")),
        ]
        # The burst (9) is spent by now: the next conference request is over the rate.
        for _ in range(3):
            answers.append(
                ("get", "/v1/conferences", await client.get("/v1/conferences", headers=TOKEN))
            )
        store.available = False
        answers.append(("get", "/readyz", await client.get("/readyz")))

    statuses = set()
    for method, path, response in answers:
        declared = operations()[(method, path)]["responses"]
        status = str(response.status_code)
        assert status in declared, (method, path, status)
        statuses.add(status)
        if response.status_code == 204:
            continue
        [(media_type, content)] = declared[status]["content"].items()
        assert response.headers["content-type"] == media_type, (method, path, status)
        validate(content["schema"], response.json())
        for header, spec in declared[status].get("headers", {}).items():
            if spec.get("required"):
                assert header.lower() in response.headers, (method, path, status, header)
    assert statuses == {"200", "202", "204", "400", "401", "404", "413", "415", "422", "429", "503"}
