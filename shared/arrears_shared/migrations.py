"""Alembic support: each service's env.py calls :func:`run_env`; ``arrears-<service> migrate`` calls
:func:`upgrade`. Every service keeps its tables and its own alembic_version in its own schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from arrears_shared.db import make_engine, wait_for_database


def alembic_config(migrations_dir: Path, database_url: str, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(migrations_dir: Path, database_url: str, schema: str, revision: str = "head") -> None:
    """Wait for the database, then migrate ``schema`` to ``revision`` (the prestart step)."""

    async def _wait() -> None:
        engine = make_engine(database_url, pool_size=1)
        try:
            await wait_for_database(engine)
        finally:
            await engine.dispose()

    asyncio.run(_wait())
    command.upgrade(alembic_config(migrations_dir, database_url, schema), revision)


def run_env(metadata: MetaData) -> None:
    """Body of every service's alembic env.py (online mode, asyncpg)."""
    cfg = context.config
    schema: str = cfg.attributes["schema"]
    url = cfg.get_main_option("sqlalchemy.url")
    assert url is not None

    def _run(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=False,
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def _online() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(_online())
