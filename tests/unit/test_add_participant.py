"""A participant added to a running conference, on in-memory fakes as strict as Postgres: it is
dialed once with the protocol of a conference's start, billed in the final event, never lost
once answered 202, and refused with a clear reason when the conference cannot take it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson
import pytest

from service.domain.commands import AddParticipantCommand, ParticipantRequest
from service.domain.conference import AdditionRefused, ConferenceStatus, DialState
from service.handlers import WorkerDeps, accept_command, accept_participant_command
from service.ports import DialOutcomeUnknown, ParticipantRefused
from tests.fakes import (
    FakeBudget,
    FakeClock,
    FakeCommandPublisher,
    FakeConferenceStore,
    FakeProvider,
)
from tests.unit.test_command_consumer import CALLER, consume, wire
from tests.unit.test_dial_protocol import TIMING, command, step
from tests.unit.test_http_api import TOKEN, api_client, build_app

MAX_DURATION = 1800


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeConferenceStore:
    return FakeConferenceStore(clock)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def deps(store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock) -> WorkerDeps:
    return WorkerDeps(
        store=store,
        provider=provider,
        budget=FakeBudget(clock),
        timing=TIMING,
        clock=clock,
        random=lambda: 0.5,
    )


def add(
    conference_id: uuid.UUID, number: str, key: str = "add-1", caller: str = "billing-team"
) -> AddParticipantCommand:
    return AddParticipantCommand(
        type="participant.add",
        command_id=uuid.uuid4(),
        conference_id=conference_id,
        caller=caller,
        idempotency_key=key,
        requested_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        payload=ParticipantRequest.model_validate({"number": number}),
    )


async def running(deps: WorkerDeps, store: FakeConferenceStore, clock: FakeClock) -> uuid.UUID:
    """A conference of two, dialed and in progress."""
    created = command("4832830151", "+5548999990000")
    assert await accept_command(store, created, clock())
    await step(deps, store)
    assert store.conference(created.conference_id).status is ConferenceStatus.IN_PROGRESS
    return created.conference_id


async def test_an_added_participant_is_dialed_once_and_billed_in_the_final_event(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    conference_id = await running(deps, store, clock)
    added = add(conference_id, "+5511988887777")
    assert await accept_participant_command(store, added, clock(), MAX_DURATION)
    # Redelivered, and the steps repeated: still one dial.
    assert not await accept_participant_command(store, added, clock(), MAX_DURATION)
    for _ in range(3):
        clock.advance(3)
        await step(deps, store)
    assert [n for _, n in provider.dials].count("+5511988887777") == 1
    assert len(provider.dials) == 3

    provider.finish_all(talk=42, price="0.1200")
    clock.advance(10)
    await step(deps, store)

    conference = store.conference(conference_id)
    assert conference.status is ConferenceStatus.COMPLETED
    assert [(p.position, p.number, p.price) for p in conference.participants] == [
        (0, "+554832830151", Decimal("0.1200")),
        (1, "+5548999990000", Decimal("0.1200")),
        (2, "+5511988887777", Decimal("0.1200")),
    ]
    events = [e for _, e in store.rows[conference_id].events]
    assert [s for s, _ in store.rows[conference_id].events] == list(range(1, len(events) + 1))
    [added_event] = [e for e in events if e.type.value == "participant.added"]
    assert added_event.data["position"] == 2 and added_event.data["number"] == "+5511988887777"
    final = events[-1]
    assert final.type.value == "conference.completed"
    assert [p["number"] for p in final.data["participants"]][-1] == "+5511988887777"
    assert final.data["totals"]["price"] == "0.3600"


async def test_a_lost_answer_for_an_added_dial_is_resolved_not_dialed_again(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    conference_id = await running(deps, store, clock)
    assert await accept_participant_command(
        store, add(conference_id, "+5511988887777"), clock(), MAX_DURATION
    )
    provider.fail_next_dial_with = DialOutcomeUnknown("read timed out")
    await step(deps, store)
    assert store.conference(conference_id).participants[2].dial_state is DialState.DIALING
    for _ in range(4):
        clock.advance(TIMING.dial_grace)
        await step(deps, store)
    assert store.conference(conference_id).participants[2].dial_state is DialState.DIALED
    assert [n for _, n in provider.dials].count("+5511988887777") == 1


async def test_an_add_into_a_room_the_provider_ended_is_rejected_with_its_reason(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    conference_id = await running(deps, store, clock)
    provider.ended.add(str(store.conference(conference_id).provider_conference_id))
    assert await accept_participant_command(
        store, add(conference_id, "+5511988887777"), clock(), MAX_DURATION
    )
    await step(deps, store)
    added = store.conference(conference_id).participants[2]
    assert added.dial_state is DialState.REJECTED
    assert "não está ativa" in (added.rejection_reason or "")


async def test_a_conference_waits_for_an_add_answered_202_before_it_ends(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    conference_id = await running(deps, store, clock)
    # The api reserved a position; the consumer has not accepted the command yet.
    pending = add(conference_id, "+5511988887777")
    await store.reserve_participant("billing-team", "add-1", "sha", pending, MAX_DURATION)
    provider.finish_all()
    for _ in range(3):
        clock.advance(5)
        await step(deps, store)
    conference = store.conference(conference_id)
    assert conference.status is ConferenceStatus.IN_PROGRESS
    assert provider.ended == set(), "the room stays open for the participant on its way"

    assert await accept_participant_command(store, pending, clock(), MAX_DURATION)
    clock.advance(5)
    await step(deps, store)
    assert "+5511988887777" in [n for _, n in provider.dials]


async def test_a_final_save_that_does_not_know_an_add_is_refused(
    deps: WorkerDeps, store: FakeConferenceStore, provider: FakeProvider, clock: FakeClock
) -> None:
    conference_id = await running(deps, store, clock)
    provider.finish_all()
    clock.advance(5)
    [claimed] = await store.claim_due((ConferenceStatus.IN_PROGRESS,), 10, TIMING.lease)
    # The add lands while the worker holds the conference, about to finish it.
    assert await accept_participant_command(
        store, add(conference_id, "+5511988887777"), clock(), MAX_DURATION
    )
    claimed.status = ConferenceStatus.COMPLETED
    claimed.finalized_at = clock()
    assert not await store.save(claimed, [], None)
    assert store.conference(conference_id).finalized_at is None
    assert len(store.conference(conference_id).participants) == 3


@pytest.mark.parametrize(
    ("setup", "number", "reason"),
    [
        ("final", "+5511988887777", AdditionRefused.FINAL),
        ("canceled", "+5511988887777", AdditionRefused.CANCELED),
        ("old", "+5511988887777", AdditionRefused.PAST_MAX_DURATION),
        ("running", "4832830151", AdditionRefused.DUPLICATE_NUMBER),
        ("full", "+5511988887777", AdditionRefused.FULL),
    ],
)
async def test_what_a_conference_cannot_take_is_refused_and_nothing_is_stored(
    deps: WorkerDeps,
    store: FakeConferenceStore,
    provider: FakeProvider,
    clock: FakeClock,
    setup: str,
    number: str,
    reason: AdditionRefused,
) -> None:
    conference_id = await running(deps, store, clock)
    if setup == "final":
        provider.finish_all()
        clock.advance(5)
        await step(deps, store)
        assert store.conference(conference_id).status.is_final
    elif setup == "canceled":
        await store.request_cancel("billing-team", conference_id)
    elif setup == "old":
        clock.advance(MAX_DURATION + 1)
    elif setup == "full":
        for i in range(8):
            assert await accept_participant_command(
                store,
                add(conference_id, f"+55119888800{i:02d}", key=f"k{i}"),
                clock(),
                MAX_DURATION,
            )
    before = len(store.conference(conference_id).participants)
    events = len(store.rows[conference_id].events)
    with pytest.raises(ParticipantRefused) as refused:
        await accept_participant_command(
            store, add(conference_id, number, key="late"), clock(), MAX_DURATION
        )
    assert refused.value.reason is reason
    assert len(store.conference(conference_id).participants) == before
    assert len(store.rows[conference_id].events) == events


async def test_an_add_produced_to_kafka_for_a_final_conference_is_dead_lettered() -> None:
    store = FakeConferenceStore(FakeClock())
    create = wire("fine")
    unknown = {
        **wire("x"),
        "type": "participant.add",
        "conference_id": str(uuid.uuid4()),
        "payload": {"number": "+5511988887777"},
    }
    duplicate = {
        **unknown,
        "command_id": str(uuid.uuid4()),
        "idempotency_key": "dup",
        "conference_id": create["conference_id"],
        "payload": {"number": "4832830151"},
    }
    fine = {
        **duplicate,
        "command_id": str(uuid.uuid4()),
        "idempotency_key": "ok",
        "payload": {"number": "+5511988887777"},
    }

    dead_letters = await consume(
        [orjson.dumps(v) for v in (create, unknown, duplicate, fine)], store
    )

    assert [h["dlq.reason"] for _, h in dead_letters.sent] == [
        b"unknown-conference",
        b"duplicate-number",
    ]
    conference = store.conference(uuid.UUID(create["conference_id"]))
    assert [p.number for p in conference.participants] == ["+554832830151", "+5511988887777"]
    assert conference.caller == CALLER


# --- over HTTP ---------------------------------------------------------------------------


@pytest.fixture
def publisher() -> FakeCommandPublisher:
    return FakeCommandPublisher()


@pytest.fixture
async def client(
    store: FakeConferenceStore, publisher: FakeCommandPublisher
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(store, publisher, default_max_duration_seconds=MAX_DURATION)
    async with api_client(app) as client:
        yield client


async def post_add(
    client: httpx.AsyncClient, conference_id: uuid.UUID | str, body: object, key: str
) -> httpx.Response:
    return await client.post(
        f"/v1/conferences/{conference_id}/participants",
        json=body,
        headers={**TOKEN, "Idempotency-Key": key},
    )


async def billing_conference(store: FakeConferenceStore, clock: FakeClock) -> uuid.UUID:
    created = command("4832830151", "+5548999990000").model_copy(update={"caller": "billing"})
    assert await accept_command(store, created, clock())
    return created.conference_id


async def test_an_add_is_answered_202_with_its_position_and_replayed_not_repeated(
    client: httpx.AsyncClient,
    store: FakeConferenceStore,
    publisher: FakeCommandPublisher,
    clock: FakeClock,
) -> None:
    conference_id = await billing_conference(store, clock)
    first = await post_add(client, conference_id, {"number": "11988887777"}, "a-1")
    again = await post_add(client, conference_id, {"number": "11988887777"}, "a-1")

    assert first.status_code == 202, first.text
    assert first.json()["position"] == 2 and first.json()["number"] == "+5511988887777"
    assert first.headers["location"] == f"/v1/conferences/{conference_id}"
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["position"] == 2
    assert len(store.additions) == 1
    assert [c["command_id"] for c in publisher.sent] == [publisher.sent[0]["command_id"]] * 2
    assert publisher.sent[0]["type"] == "participant.add"


async def test_refusals_are_problems_and_nothing_is_reserved_or_published(
    client: httpx.AsyncClient,
    store: FakeConferenceStore,
    publisher: FakeCommandPublisher,
    clock: FakeClock,
) -> None:
    conference_id = await billing_conference(store, clock)
    assert (
        await post_add(client, conference_id, {"number": "+5511988887777"}, "a-1")
    ).status_code == 202
    published = len(publisher.sent)

    cases = {
        "reused key": (
            conference_id,
            {"number": "+5511977776666"},
            "a-1",
            422,
            "idempotency-key-reused",
        ),
        "same number, another key": (
            conference_id,
            {"number": "11988887777"},
            "a-2",
            422,
            "duplicate-number",
        ),
        "a number already there": (
            conference_id,
            {"number": "4832830151"},
            "a-3",
            422,
            "duplicate-number",
        ),
        "an invalid number": (conference_id, {"number": "12"}, "a-4", 422, "validation"),
        "an unknown field": (
            conference_id,
            {"number": "+5511977776666", "position": 1},
            "a-5",
            422,
            "validation",
        ),
        "an unknown conference": (
            uuid.uuid4(),
            {"number": "+5511977776666"},
            "a-6",
            404,
            "unknown-conference",
        ),
        "not a conference id": ("nope", {"number": "+5511977776666"}, "a-7", 404, None),
    }
    for what, (target, body, key, status, kind) in cases.items():
        answer = await post_add(client, target, body, key)
        assert answer.status_code == status, (what, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", what
        if kind is not None:
            assert answer.json()["type"].endswith("/" + kind), (what, answer.json())
    assert len(publisher.sent) == published
    assert len(store.additions) == 1

    await store.request_cancel("billing", conference_id)
    canceled = await post_add(client, conference_id, {"number": "+5511977776666"}, "a-8")
    assert canceled.status_code == 409 and canceled.json()["type"].endswith("/conference-canceled")


async def test_another_callers_conference_is_not_found(
    client: httpx.AsyncClient, store: FakeConferenceStore, clock: FakeClock
) -> None:
    created = command("4832830151").model_copy(update={"caller": "support"})
    assert await accept_command(store, created, clock())
    answer = await post_add(client, created.conference_id, {"number": "+5511977776666"}, "a-1")
    assert answer.status_code == 404
    assert store.additions == {}
