"""Schemathesis against the /openapi.json that a real api process serves: generated requests to
every operation (valid and invalid ones) never get a 5xx, and every answer's status, content type
and body are the ones the document declares.

Half of the id-taking cases use a conference that exists and half of the webhook cases the real
secret, so the full views and 204s are checked too, not only 404s. Every accepted POST creates a
real conference in this lane.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import API_TOKEN, WEBHOOK_SECRET, Base, Lane, open_lane
from tests.waiting import eventually

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# Per operation, per generation mode and per fixed id (a known conference, the real secret).
EXAMPLES = 50


@pytest.fixture(scope="module")
async def fuzz_lane(base: Base) -> AsyncIterator[Lane]:
    # The fuzzer is one caller sending as fast as it can: limits would only make it see 429s.
    lane = await open_lane(
        base,
        CALLER_RATE_LIMIT_PER_SECOND="100000",
        CALLER_RATE_LIMIT_BURST="100000",
        CALLER_PARTICIPANTS_PER_MINUTE="10000000",
    )
    yield lane
    assert not await lane.close()


@pytest.fixture(scope="module")
async def known_ids(fuzz_lane: Lane) -> list[str]:
    """A conference that has completed and one still being carried out."""
    async with fuzz_lane.api() as api:
        ids = []
        for numbers in (["4832830151", "+5548999990000"], ["4832830152"]):
            response = await api.post(
                "/v1/conferences",
                headers={"Idempotency-Key": str(uuid.uuid4())},
                json={"participants": [{"number": n} for n in numbers], "metadata": {"a": "b"}},
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])

        async def completed() -> bool:
            view = (await api.get(f"/v1/conferences/{ids[0]}")).json()
            return bool(view["status"] == "completed")

        await eventually(completed, 60, "the first conference to complete")
    return ids


def test_the_api_answers_as_its_openapi_document_says(
    fuzz_lane: Lane, known_ids: list[str]
) -> None:
    # schemathesis' pytest loader for a schema served by a fixture does not run on pytest 9
    # (it sets Node._nodeid), so each operation's strategy is driven by Hypothesis here.
    schema = schemathesis.openapi.from_url(f"{fuzz_lane.api_url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation of the document but GET /openapi.json, which schemathesis leaves out.
    assert len(operations) == 11
    counts: dict[str, Counter[int]] = {}
    session = requests.Session()

    def fuzz(operation: Any, mode: GenerationMode, fixed: dict[str, str] | None) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        def run(case: Any) -> None:
            response = case.call_and_validate(
                base_url=fuzz_lane.api_url, session=session, headers=AUTH, checks=CHECKS
            )
            label = f"{operation.label} ({mode.value})"
            counts.setdefault(label, Counter())[response.status_code] += 1

        run()

    for operation in operations:
        variants: list[dict[str, str] | None] = [None]
        if "{conference_id}" in operation.path:
            variants += [{"conference_id": conference_id} for conference_id in known_ids]
        if "{secret}" in operation.path:
            variants.append({"secret": WEBHOOK_SECRET})
        for fixed in variants:
            fuzz(operation, GenerationMode.POSITIVE, fixed)
            # Negative cases need something to get wrong (the token is always ours).
            free = {p.name for p in operation.iter_parameters()} - {"Authorization", *(fixed or {})}
            if operation.body or free:
                fuzz(operation, GenerationMode.NEGATIVE, fixed)
    statuses = sum(counts.values(), Counter[int]())
    print(
        f"\nschemathesis: {statuses.total()} requests, by status {dict(sorted(statuses.items()))}"
    )
    for label, by_status in sorted(counts.items()):
        print(f"  {label}: {dict(sorted(by_status.items()))}")
    assert statuses.total() > 0
    assert not [status for status in statuses if status >= 500]


async def test_the_served_document_is_the_one_in_the_code(fuzz_lane: Lane) -> None:
    from service.entrypoints.openapi import OPENAPI

    async with httpx.AsyncClient(base_url=fuzz_lane.api_url) as client:
        served = (await client.get("/openapi.json")).json()
    assert served == OPENAPI
