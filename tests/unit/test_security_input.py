"""Bad and hostile input over the ASGI app with fakes: every answer is a problem+json 4xx (or a
503 with Retry-After when a dependency fails), nothing internal leaks, and a flood of webhooks
cannot hold the conference routes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.entrypoints.limits import ApiLimits
from service.handlers import accept_command
from tests.fakes import FakeClock, FakeCommandPublisher, FakeConferenceStore
from tests.unit.test_http_api import VALID, api_client, build_app
from tests.waiting import eventually

TOKEN = {"Authorization": "Bearer s3cret-token"}
HOOK = "/v1/webhooks/totalvoice/hook-secret"
PROBLEMS = "https://conference-service/problems/"


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = dict(response.json())
    assert problem["type"] == PROBLEMS + kind
    assert problem["status"] == status
    assert {"type", "title", "status", "detail"} <= problem.keys()
    return problem


@pytest.fixture
def store() -> FakeConferenceStore:
    return FakeConferenceStore(FakeClock())


@pytest.fixture
def publisher() -> FakeCommandPublisher:
    return FakeCommandPublisher()


@pytest.fixture
async def client(
    store: FakeConferenceStore, publisher: FakeCommandPublisher
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(build_app(store, publisher)) as client:
        yield client


async def create(client: httpx.AsyncClient, **kwargs: Any) -> httpx.Response:
    headers = {**TOKEN, "Idempotency-Key": str(uuid.uuid4()), **kwargs.pop("headers", {})}
    return await client.post("/v1/conferences", headers=headers, **kwargs)


# --- authentication --------------------------------------------------------------------------


async def test_401_says_nothing_of_why_the_token_was_refused(client: httpx.AsyncClient) -> None:
    answers = [
        await client.get("/v1/conferences"),
        await client.get("/v1/conferences", headers={"Authorization": "Bearer nope"}),
        await client.get("/v1/conferences", headers={"Authorization": "Bearer s3cret-toke"}),
        await client.get("/v1/conferences", headers={"Authorization": "Basic s3cret-token"}),
        await client.get("/v1/conferences", headers={"Authorization": "s3cret-token"}),
        # A token is a caller's, not a caller's name.
        await client.get("/v1/conferences", headers={"Authorization": "Bearer billing"}),
    ]
    for response in answers:
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert len({r.content for r in answers}) == 1


async def test_another_callers_conference_is_the_same_404_as_an_unknown_id(
    client: httpx.AsyncClient, store: FakeConferenceStore, publisher: FakeCommandPublisher
) -> None:
    conference_id = (await create(client, json=VALID)).json()["id"]
    await accept_command(store, publisher.published[0], store.clock())  # the worker's step
    other = {"Authorization": "Bearer other-token"}

    mine = await client.get(f"/v1/conferences/{conference_id}", headers=TOKEN)
    theirs = await client.get(f"/v1/conferences/{conference_id}", headers=other)
    unknown = await client.get(f"/v1/conferences/{uuid.uuid4()}", headers=other)
    cancel = await client.delete(f"/v1/conferences/{conference_id}", headers=other)
    listed = await client.get("/v1/conferences", headers=other)

    assert mine.status_code == 200
    assert_problem(theirs, 404, "not-found")
    assert theirs.content == unknown.content
    assert_problem(cancel, 404, "not-found")
    assert store.conference(uuid.UUID(conference_id)).cancel_requested_at is None
    assert listed.json()["items"] == []


# --- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "status", "kind"),
    [
        (b"{nope", "application/json", 400, "malformed-json"),
        (b"", "application/json", 400, "malformed-json"),
        (b'{"a": "\\ud800"}', "application/json", 400, "malformed-json"),
        (b"[" * 2000 + b"]" * 2000, "application/json", 400, "malformed-json"),
        (b'{"participants": 1}', "text/plain", 415, "unsupported-media-type"),
        (b'{"participants": 1}', "application/problem+json", 415, "unsupported-media-type"),
        (b"participants=1", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
        (b"[]", "application/json", 422, "validation"),
        (b'"text"', "application/json", 422, "validation"),
        (b'{"participants": [{"number": 1e400}]}', "application/json", 400, "malformed-json"),
        (
            b'{"participants": [{"number": "4832830151"}], "reference": "a\\u0000b"}',
            "application/json",
            422,
            "validation",
        ),
        (
            b'{"participants": [{"number": "4832830151"}], "metadata": {"k\\u0000": "v"}}',
            "application/json",
            422,
            "validation",
        ),
        (
            b'{"participants": [{"number": "4832830151"}], "max_duration_seconds": 1e300}',
            "application/json",
            422,
            "validation",
        ),
        (
            b'{"participants": [{"number": "4832830151"}], "metadata": '
            + b'{"a": ' * 40
            + b"1"
            + b"}" * 41,
            "application/json",
            422,
            "validation",
        ),
    ],
)
async def test_bad_bodies_get_their_problem_and_are_not_published(
    client: httpx.AsyncClient,
    publisher: FakeCommandPublisher,
    store: FakeConferenceStore,
    content: bytes,
    content_type: str,
    status: int,
    kind: str,
) -> None:
    response = await create(client, content=content, headers={"Content-Type": content_type})
    assert_problem(response, status, kind)
    assert publisher.published == []
    assert store.ingress == {}


async def test_a_nul_character_is_reported_with_its_field(client: httpx.AsyncClient) -> None:
    response = await create(
        client, json={**VALID, "metadata": {"team": "a\x00b"}, "reference": "ok"}
    )
    problem = assert_problem(response, 422, "validation")
    assert problem["errors"] == [
        {"field": "metadata.team", "message": "must not contain NUL characters"}
    ]


async def test_a_body_over_64_kib_is_refused_while_it_is_read(
    client: httpx.AsyncClient, publisher: FakeCommandPublisher
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        # No Content-Length: the limit must hold on the stream itself.
        nonlocal sent
        yield b'{"participants": [{"number": "4832830151"}], "reference": "'
        for _ in range(10_000):
            sent += 1024
            yield b"x" * 1024

    response = await create(client, content=endless(), headers={"Content-Type": "application/json"})
    assert_problem(response, 413, "request-body-too-large")
    assert sent < 80 * 1024
    declared = await create(
        client,
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": str(64 * 1024 + 1)},
    )
    assert declared.status_code == 413
    assert publisher.published == []


async def test_field_errors_are_listed_but_bounded(client: httpx.AsyncClient) -> None:
    junk = {"participants": [{"number": "4832830151"}], **{f"extra{i}": i for i in range(500)}}
    problem = assert_problem(await create(client, json=junk), 422, "validation")
    assert 1 <= len(problem["errors"]) <= 50


# --- the list's query ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "²"},
        {"limit": "9" * 5000},
        {"limit": "0"},
        {"limit": "-1"},
        {"status": "nope"},
        {"reference": "a\x00b"},
        {"reference": "x" * 201},
        {"created_from": "0001-01-01T00:00:00+05:00"},
        {"created_to": "yesterday"},
        {"cursor": "!!!"},
        {"cursor": "MTIz"},  # base64 of 123
        {"cursor": "WzEsMl0"},  # base64 of [1,2]
        {"cursor": "WyIyMDI2LTAxLTAxIiwgMV0"},  # ["2026-01-01", 1]
        {"surprise": "1"},
    ],
)
async def test_a_bad_list_query_is_a_422_never_a_500(
    client: httpx.AsyncClient, query: dict[str, str]
) -> None:
    response = await client.get("/v1/conferences", params=query, headers=TOKEN)
    problem = assert_problem(response, 422, "validation")
    assert problem["errors"]


@pytest.mark.parametrize(
    "moment",
    ["2026-11-26T12:00:00Z", "2026-11-26t12:00:00z", "2016-12-31T23:59:60Z", "2026-11-26T09:00:00"],
)
async def test_rfc_3339_date_times_are_accepted(client: httpx.AsyncClient, moment: str) -> None:
    response = await client.get("/v1/conferences", params={"created_from": moment}, headers=TOKEN)
    assert response.status_code == 200, response.text


async def test_odd_conference_ids_are_not_found(client: httpx.AsyncClient) -> None:
    for odd in ("not-a-uuid", "%00", "' OR 1=1 --", "9" * 300):
        response = await client.get(f"/v1/conferences/{odd}", headers=TOKEN)
        assert_problem(response, 404, "not-found")


# --- webhooks --------------------------------------------------------------------------------


class RecordingInbox:
    """A webhook inbox that keeps what it was given and can be held shut."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str | None, str | None, dict[str, Any]]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.waiting = 0

    async def record_webhook(
        self,
        provider_conference_id: str | None,
        provider_call_id: str | None,
        payload: dict[str, Any],
        look_in: float | None,
        nudge_interval: float = 0.0,
    ) -> bool:
        self.waiting += 1
        await self.open.wait()
        self.waiting -= 1
        self.recorded.append((provider_conference_id, provider_call_id, payload))
        return False


@pytest.fixture
def inbox() -> RecordingInbox:
    return RecordingInbox()


@pytest.fixture
async def hooks(
    store: FakeConferenceStore, publisher: FakeCommandPublisher, inbox: RecordingInbox
) -> AsyncIterator[httpx.AsyncClient]:
    limits = ApiLimits(webhook_max_concurrency=2)
    async with api_client(build_app(store, publisher, webhooks=inbox, limits=limits)) as client:
        yield client


HOSTILE_WEBHOOKS: list[tuple[bytes, int]] = [
    (b'{"conferencia_id": 123456789012345678901234567890}', 204),
    (b'{"conferencia_id": 18446744073709551615, "chamada_id": -5}', 204),
    (b'{"conferencia_id": 1e308, "chamada_id": 1.5}', 204),
    (b'{"conferencia_id": "' + b"9" * 5000 + b'"}', 204),
    (b'{"conferencia_id": "\xc2\xb2", "id": "\xd9\xa3"}', 204),  # superscript two, arabic three
    (b'{"conferencia_id": "1; DROP TABLE conference; --", "chamada_id": "\' OR 1=1 --"}', 204),
    (b'{"conferencia_id": {"$gt": ""}, "chamada_id": [1, 2], "id": true}', 204),
    (b'{"evento_conferencia": {"a": [1, {"b": null}]}, "x": "{{7*7}} ${jndi:ldap://x/a}"}', 204),
    (b'{"deep": ' + b"[" * 30 + b"]" * 30 + b"}", 204),
    (b'{"deep": ' + b"[" * 40 + b"]" * 40 + b"}", 422),
    (b'{"deep": ' + b"[" * 1100 + b"]" * 1100 + b"}", 400),
    (b'{"conferencia_id": 1, "nul": "a\\u0000b"}', 422),
    (b'{"conferencia_id": 1, "a\\u0000": 1}', 422),
    (b"[1, 2, 3]", 422),
    (b"null", 422),
    (b"12", 422),
    (b"not json", 400),
    (b"", 400),
    (b'{"a": 1e400}', 400),
    (b'{"a": "\\udc00"}', 400),
    (b"\xff\xfe{}", 400),
    (b'{"pad": "' + b"x" * (16 * 1024) + b'"}', 413),
]


@pytest.mark.parametrize(("content", "status"), HOSTILE_WEBHOOKS)
async def test_a_hostile_webhook_is_a_204_or_a_4xx_and_only_digit_ids_are_used(
    hooks: httpx.AsyncClient, inbox: RecordingInbox, content: bytes, status: int
) -> None:
    response = await hooks.post(HOOK, content=content)
    assert response.status_code == status, response.text
    if status != 204:
        assert response.headers["content-type"] == "application/problem+json"
        assert inbox.recorded == []
        return
    [(conference_ref, call_ref, _)] = inbox.recorded
    for ref in (conference_ref, call_ref):
        assert ref is None or (ref.isascii() and ref.isdigit() and len(ref) <= 19)


async def test_webhook_ids_that_look_like_the_providers_are_used(
    hooks: httpx.AsyncClient, inbox: RecordingInbox
) -> None:
    await hooks.post(HOOK, json={"conferencia_id": 4411, "chamada_id": " 0077 "})
    await hooks.post(HOOK, json={"id": "9001"}, headers={"Content-Type": "text/plain"})
    assert [(c, a) for c, a, _ in inbox.recorded] == [("4411", "77"), (None, "9001")]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(
        st.sampled_from(["conferencia_id", "chamada_id", "id", "x"]) | st.text(), json_values
    )
)
def test_any_json_object_webhook_is_a_204_or_a_4xx(body: dict[str, Any]) -> None:
    inbox = RecordingInbox()

    async def post() -> httpx.Response:
        store = FakeConferenceStore(FakeClock())
        app = build_app(store, FakeCommandPublisher(), webhooks=inbox)
        async with api_client(app) as client:
            return await client.post(HOOK, json=body)

    response = asyncio.run(post())
    assert response.status_code in (204, 413, 422), response.text


async def test_a_wrong_webhook_secret_is_not_found_before_anything_is_read(
    hooks: httpx.AsyncClient, inbox: RecordingInbox
) -> None:
    for secret in ("guess", "hook-secre", "hook-secret-", "HOOK-SECRET", "hook-secret%00"):
        response = await hooks.post(f"/v1/webhooks/totalvoice/{secret}", content=b"not json")
        assert_problem(response, 404, "not-found")
    assert inbox.recorded == []


async def test_a_webhook_flood_is_turned_away_fast_and_conferences_still_answer(
    hooks: httpx.AsyncClient, inbox: RecordingInbox, publisher: FakeCommandPublisher
) -> None:
    inbox.open.clear()  # the database is slow: callbacks pile up
    held = [asyncio.create_task(hooks.post(HOOK, json={"conferencia_id": i})) for i in range(2)]

    async def both_held() -> bool:
        return inbox.waiting == 2

    await eventually(both_held, 2, "two callbacks to hold both places", interval=0.001)

    async with asyncio.timeout(2):
        flood = await asyncio.gather(
            *(hooks.post(HOOK, json={"conferencia_id": i}) for i in range(200))
        )
        created = await create(hooks, json=VALID)
        listed = await hooks.get("/v1/conferences", headers=TOKEN)
    for response in flood:
        assert_problem(response, 503, "webhooks-saturated")
        assert response.headers["retry-after"] == "1"
    assert created.status_code == 202
    assert listed.status_code == 200

    inbox.open.set()
    assert [r.status_code for r in await asyncio.gather(*held)] == [204, 204]
    assert (await hooks.post(HOOK, json={"conferencia_id": 1})).status_code == 204


# --- failures inside -------------------------------------------------------------------------


class BrokenConferences:
    """Reads that fail as a dead database would, with a message that must not leak."""

    async def get(self, caller: str, conference_id: uuid.UUID) -> dict[str, Any] | None:
        raise OSError("connect to postgresql://conference:hunter2@db:5432 failed")

    async def find(self, caller: str, filters: Any, limit: int) -> tuple[list[Any], None]:
        raise TimeoutError("postgresql://conference:hunter2@db:5432 timed out")

    async def request_cancel(self, caller: str, conference_id: uuid.UUID) -> str | None:
        raise ConnectionResetError("hunter2")


async def test_a_failing_dependency_is_a_503_with_retry_after_and_no_detail(
    store: FakeConferenceStore, publisher: FakeCommandPublisher
) -> None:
    app = build_app(store, publisher, conferences=BrokenConferences(), webhooks=BrokenInbox())
    some_id = uuid.uuid4()
    async with api_client(app) as client:
        answers = [
            await client.get(f"/v1/conferences/{some_id}", headers=TOKEN),
            await client.get("/v1/conferences", headers=TOKEN),
            await client.delete(f"/v1/conferences/{some_id}", headers=TOKEN),
            await client.post(HOOK, json={"conferencia_id": 1}),
        ]
        store.available = False
        answers.append(await create(client, json=VALID))
        store.available = True
        publisher.available = False
        answers.append(await create(client, json=VALID))
    for response in answers:
        assert_problem(response, 503, "service-unavailable")
        assert response.headers["retry-after"] == "5"
        assert b"hunter2" not in response.content
        assert b"postgres" not in response.content.lower()
        assert b"kafka" not in response.content.lower()


class BrokenInbox:
    async def record_webhook(self, *args: Any, **kwargs: Any) -> bool:
        raise OSError("postgresql://conference:hunter2@db:5432")


class BuggyConferences(BrokenConferences):
    async def get(self, caller: str, conference_id: uuid.UUID) -> dict[str, Any] | None:
        return {"id": object(), "secret": "hunter2"}  # not JSON: the handler itself fails


async def test_an_unexpected_error_is_a_bare_500_problem(
    store: FakeConferenceStore, publisher: FakeCommandPublisher
) -> None:
    app = build_app(store, publisher, conferences=BuggyConferences())
    async with api_client(app) as client:
        response = await client.get(f"/v1/conferences/{uuid.uuid4()}", headers=TOKEN)
    problem = assert_problem(response, 500, "internal-error")
    assert problem["detail"] == "the request could not be completed"
    for leak in (b"hunter2", b"Traceback", b"TypeError", b"object", b"http.py"):
        assert leak not in response.content


async def test_an_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404, "not-found")
    wrong = await client.put("/v1/conferences", headers=TOKEN)
    assert_problem(wrong, 405, "method-not-allowed")
    assert "POST" in wrong.headers["allow"]
