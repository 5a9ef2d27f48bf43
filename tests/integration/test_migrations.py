"""Every migration applies to an empty database and reverses cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import asyncpg
import pytest

from tests.databases import ROOT, create_database, drop_database

SCRIPT = """
import sys
from alembic import command
from alembic.config import Config
config = Config()
config.set_main_option("script_location", "migrations")
command.upgrade(config, "head")
command.downgrade(config, "base")
command.upgrade(config, "head")
"""


async def test_migrations_upgrade_downgrade_and_upgrade_again() -> None:
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.fail("TEST_DATABASE_URL is not set: run the suite with `make test`")
    name = f"conference_migrations_{uuid.uuid4().hex[:8]}"
    url = await create_database(admin_url, name)
    try:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        connection = await asyncpg.connect(url)
        try:
            view = await connection.fetchval(
                "SELECT count(*) FROM information_schema.views"
                " WHERE table_name = 'billing_conference_call'"
            )
        finally:
            await connection.close()
        assert view == 1
    finally:
        await drop_database(admin_url, name)
