"""Driving a lane the way callers do, and reading back what the provider and the service hold."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema

from tests.waiting import eventually

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FINAL = ("completed", "failed", "canceled", "unresolved")


def event_schema() -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / "conference.events.v1.json").read_text()))


async def create_conferences(
    api: httpx.AsyncClient, bodies: list[dict[str, Any]], concurrency: int = 20
) -> list[str]:
    """POST every body (each with its own idempotency key); the ids, in order."""
    gate = asyncio.Semaphore(concurrency)

    async def create(body: dict[str, Any]) -> str:
        async with gate:
            response = await api.post(
                "/v1/conferences", headers={"Idempotency-Key": str(uuid.uuid4())}, json=body
            )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    return list(await asyncio.gather(*(create(b) for b in bodies)))


async def wait_final(
    db: asyncpg.Connection, ids: list[str], timeout: float
) -> dict[str, asyncpg.Record]:
    """Wait until every conference is final; its row by id."""
    wanted = [uuid.UUID(i) for i in ids]

    async def all_final() -> dict[str, asyncpg.Record] | None:
        rows = await db.fetch(
            "SELECT * FROM conference WHERE id = ANY($1) AND status = ANY($2)", wanted, FINAL
        )
        return {str(r["id"]): r for r in rows} if len(rows) == len(wanted) else None

    return await eventually(all_final, timeout, f"{len(ids)} conferences to be final", 0.5)


async def ledger(sim: httpx.AsyncClient) -> dict[str, Any]:
    response = await sim.get("/_simulator/ledger")
    response.raise_for_status()
    return dict(response.json())


def validate_events(events: list[dict[str, Any]]) -> None:
    schema = event_schema()
    for event in events:
        jsonschema.validate(event, schema)
