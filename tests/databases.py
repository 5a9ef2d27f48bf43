"""Throwaway databases on the stack's Postgres, for tests that need one of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]


async def create_database(admin_url: str, name: str) -> str:
    """An empty database beside the one `admin_url` names; its URL."""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def migrate(url: str) -> None:
    """`python -m service migrate`, as a deployment runs it."""
    migrated = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]


async def drop_database(admin_url: str, name: str) -> None:
    """Drop it, retrying while a server process (autovacuum, say) still has it open."""
    admin = await asyncpg.connect(admin_url)
    try:

        async def dropped() -> bool:
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except asyncpg.PostgresError:
                return False
            return True

        await eventually(dropped, 30, f"database {name} to be dropped", interval=0.5)
    finally:
        await admin.close()
