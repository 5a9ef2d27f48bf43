"""A retry with the same Idempotency-Key and the same bytes gets the first answer again,
whatever changed in between: a deploy with another model, another pod, a spent budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from service.domain.commands import CreateConference
from service.entrypoints.limits import ApiLimits
from tests.fakes import FakeClock, FakeCommandPublisher, FakeConferenceStore
from tests.unit.test_http_api import api_client, build_app
from tests.unit.test_security_limits import assert_rate_limited, body, create

# The same request, as bytes a caller would resend.
REQUEST = {
    "participants": [{"number": "4832830151"}, {"number": "+5548999990000"}],
    "reference": "ticket-8812",
}


class WithPriority(CreateConference):
    """The next deploy's model: a new field with a default."""

    priority: Literal["normal", "urgent"] = "normal"


class StricterReference(CreateConference):
    """The next deploy's model: a tighter rule on a field the first request used."""

    reference: str | None = Field(default=None, max_length=6)


async def test_a_retry_across_a_deploy_that_added_a_defaulted_field_is_replayed() -> None:
    store, publisher = FakeConferenceStore(FakeClock()), FakeCommandPublisher()
    before = build_app(store, publisher)
    after = build_app(store, publisher, payload_model=WithPriority)
    async with api_client(before) as old, api_client(after) as new:
        first = await create(old, REQUEST, key="k-1")
        retry = await create(new, REQUEST, key="k-1")
        changed = await create(new, {**REQUEST, "reference": "ticket-9"}, key="k-1")

    assert first.status_code == 202
    assert retry.status_code == 202, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]
    assert changed.status_code == 422
    # The replay publishes the command as it was stored, not as today's model would make it.
    assert publisher.sent[0] == publisher.sent[1]


async def test_a_retry_across_a_deploy_with_a_stricter_model_is_replayed() -> None:
    store, publisher = FakeConferenceStore(FakeClock()), FakeCommandPublisher()
    async with (
        api_client(build_app(store, publisher)) as old,
        api_client(build_app(store, publisher, payload_model=StricterReference)) as new,
    ):
        first = await create(old, REQUEST, key="k-2")
        retry = await create(new, REQUEST, key="k-2")
        fresh = await create(new, REQUEST, key="k-3")

    assert first.status_code == 202
    assert retry.status_code == 202, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert fresh.status_code == 422  # a new request meets the new rule


async def test_the_fingerprint_is_the_body_as_sent_not_as_normalized() -> None:
    """`4832830151` and `+554832830151` are one number to the model, but two requests."""
    store, publisher = FakeConferenceStore(FakeClock()), FakeCommandPublisher()
    async with api_client(build_app(store, publisher)) as client:
        first = await create(client, {"participants": [{"number": "4832830151"}]}, key="k")
        other = await create(client, {"participants": [{"number": "+554832830151"}]}, key="k")
        reordered = await create(
            client, {"participants": [{"number": "4832830151"}], "record": False}, key="k2"
        )
        same = await create(
            client, {"record": False, "participants": [{"number": "4832830151"}]}, key="k2"
        )

    assert first.status_code == 202
    assert other.status_code == 422
    assert reordered.status_code == 202
    assert same.status_code == 202 and same.headers["idempotent-replayed"] == "true"


async def test_a_replay_at_another_pod_is_never_charged_against_the_participant_budget() -> None:
    store, publisher = FakeConferenceStore(FakeClock()), FakeCommandPublisher()
    limits = ApiLimits(participants_per_minute=10)
    pod_a = build_app(store, publisher, limits=limits)
    pod_b = build_app(store, publisher, limits=limits)
    async with api_client(pod_a) as a, api_client(pod_b) as b:
        first = await a.post(
            "/v1/conferences",
            json=body(8),
            headers={"Authorization": "Bearer s3cret-token", "Idempotency-Key": "big"},
        )
        nearly_spent = await create(b, body(4, first=20))  # pod B: 4 of 10 spent
        replay = await create(b, body(8), key="big")
        over = await create(b, body(8, first=40))

    assert first.status_code == 202
    assert nearly_spent.status_code == 202
    assert replay.status_code == 202, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert_rate_limited(over, "participant-rate-limited")
