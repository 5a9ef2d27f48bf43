"""Every migration applies to an empty database and reverses cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from decimal import Decimal

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


def alembic(url: str, direction: str, target: str) -> None:
    script = (
        "from alembic import command\n"
        "from alembic.config import Config\n"
        "config = Config()\n"
        "config.set_main_option('script_location', 'migrations')\n"
        f"command.{direction}(config, {target!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


async def billed_prices(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT price::text FROM billing_conference_call ORDER BY provider_call_id"
        )
    finally:
        await connection.close()
    return [r["price"] for r in rows]


async def test_price_precision_migrates_a_database_holding_prices_both_ways() -> None:
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.fail("TEST_DATABASE_URL is not set: run the suite with `make test`")
    name = f"conference_migrations_{uuid.uuid4().hex[:8]}"
    url = await create_database(admin_url, name)
    try:
        alembic(url, "upgrade", "0006")
        connection = await asyncpg.connect(url)
        try:
            conference_id = uuid.uuid4()
            await connection.execute(
                "INSERT INTO conference (id, command_id, caller, idempotency_key, status,"
                " requested_at, finalized_at) VALUES ($1, $2, 'c', 'k', 'completed', now(), now())",
                conference_id,
                uuid.uuid4(),
            )
            await connection.execute(
                "INSERT INTO participant (conference_id, position, number, record,"
                " provider_call_id, price) VALUES ($1, 0, '+554832830151', false, '1', 0.1234)",
                conference_id,
            )
        finally:
            await connection.close()

        alembic(url, "upgrade", "head")
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "INSERT INTO participant (conference_id, position, number, record,"
                " provider_call_id, price) VALUES ($1, 1, '+554832830152', false, '2', 0.123456)",
                conference_id,
            )
        finally:
            await connection.close()
        assert await billed_prices(url) == ["0.123400", "0.123456"]

        alembic(url, "downgrade", "0006")
        assert await billed_prices(url) == ["0.1234", "0.1235"]
        alembic(url, "upgrade", "head")
        assert await billed_prices(url) == ["0.123400", "0.123500"]
    finally:
        await drop_database(admin_url, name)


async def test_ledger_adjustments_migrate_a_database_holding_rows_both_ways() -> None:
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.fail("TEST_DATABASE_URL is not set: run the suite with `make test`")
    name = f"conference_migrations_{uuid.uuid4().hex[:8]}"
    url = await create_database(admin_url, name)
    try:
        alembic(url, "upgrade", "0009")
        conference_id = uuid.uuid4()
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "INSERT INTO conference (id, command_id, caller, idempotency_key, status,"
                " requested_at, finalized_at) VALUES ($1, $2, 'c', 'k', 'completed', now(), now())",
                conference_id,
                uuid.uuid4(),
            )
            await connection.execute(
                "INSERT INTO participant (conference_id, position, number, record,"
                " provider_call_id, price, billed_seconds) VALUES"
                " ($1, 0, '+554832830151', false, '1', 0.123456, 60)",
                conference_id,
            )
        finally:
            await connection.close()

        alembic(url, "upgrade", "head")
        connection = await asyncpg.connect(url)
        try:
            row = await connection.fetchrow("SELECT * FROM billing_conference_call")
            assert (row["price"], row["adjustments"], row["last_adjusted_at"]) == (
                Decimal("0.123456"),
                0,
                None,
            )
            run_id = await connection.fetchval(
                "INSERT INTO reconcile_run (period_start, period_end) VALUES (now(), now())"
                " RETURNING id"
            )
            await connection.execute(
                "INSERT INTO ledger_adjustment (event_id, conference_id, position,"
                " provider_call_id, field, ordinal, before, after, source, run_id) VALUES"
                " ($1, $2, 0, '1', 'price', 1, '0.123456', '0.654321', 'report', $3),"
                " ($4, $2, 0, '1', 'price', 2, '0.654321', '0.700001', 'report', $3)",
                uuid.uuid4(),
                conference_id,
                run_id,
                uuid.uuid4(),
            )
            row = await connection.fetchrow("SELECT * FROM billing_conference_call")
            assert (row["price"], row["billed_seconds"], row["adjustments"]) == (
                Decimal("0.700001"),
                60,
                2,
            )
            assert await connection.fetchval("SELECT price FROM participant") == Decimal(
                "0.123456"
            ), "the original stays"
            assert await connection.fetchval("SELECT count(*) FROM billing_adjustment") == 2
        finally:
            await connection.close()

        # Down: the corrections are folded into the row, as the old contract kept them.
        alembic(url, "downgrade", "0009")
        assert await billed_prices(url) == ["0.700001"]
        alembic(url, "upgrade", "head")
        assert await billed_prices(url) == ["0.700001"]
    finally:
        await drop_database(admin_url, name)
