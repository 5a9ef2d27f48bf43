"""A throwaway, migrated database per test, and the store on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from service.adapters.postgres import PostgresStore, open_pool
from tests.databases import create_database, drop_database, migrate


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.fail("TEST_DATABASE_URL is not set: run the suite with `make test`")
    name = f"conference_it_{uuid.uuid4().hex[:8]}"
    url = await create_database(admin_url, name)
    try:
        migrate(url)
        yield url
    finally:
        await drop_database(admin_url, name)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    pool = await open_pool(database_url)
    try:
        yield PostgresStore(pool, "conference.events.v1")
    finally:
        await pool.close()
