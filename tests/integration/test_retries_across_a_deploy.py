"""A deploy between a request and its retry, on one real database: the api before it and the
api after it (whose model gained a defaulted field) answer the same key and bytes the same."""

from __future__ import annotations

from service.adapters.postgres import PostgresStore
from tests.fakes import FakeCommandPublisher
from tests.unit.test_http_api import api_client, build_app
from tests.unit.test_retries import REQUEST, WithPriority
from tests.unit.test_security_limits import create


async def test_a_retry_after_a_deploy_is_replayed_from_the_database(store: PostgresStore) -> None:
    publisher = FakeCommandPublisher()
    before = build_app(store, publisher)  # the store of a real database, as in production
    after = build_app(store, publisher, payload_model=WithPriority)
    async with api_client(before) as old, api_client(after) as new:
        first = await create(old, REQUEST, key="deploy-1")
        retry = await create(new, REQUEST, key="deploy-1")
        other = await create(new, {**REQUEST, "reference": "ticket-9"}, key="deploy-1")

    assert first.status_code == 202, first.text
    assert retry.status_code == 202, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]
    assert other.status_code == 422
    assert publisher.sent[0] == publisher.sent[1]  # the stored command, as stored
