"""Alembic runs our hand-written SQL revisions over asyncpg, with the URL from DATABASE_URL."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.settings import DatabaseSettings, load


def _async_url() -> str:
    url = load(DatabaseSettings).database_url.get_secret_value()
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(_async_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `python -m service migrate`")
asyncio.run(_main())
