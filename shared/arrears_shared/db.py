"""Async SQLAlchemy 2 engine and session factory on asyncpg, and waiting for the database."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)


def _json_dumps(value: object) -> str:
    """JSON/JSONB parameters, written by orjson (several times faster than the json module)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "arrears") -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"application_name": application_name}},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine, timeout: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def wait_for_database(engine: AsyncEngine, timeout: float = 60.0) -> None:
    """Block until the database answers, or raise after ``timeout`` seconds (prestart)."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while not await ping(engine):
        if time.monotonic() > deadline:
            raise TimeoutError(f"database not reachable after {timeout:.0f}s")
        log.info("waiting for the database")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
