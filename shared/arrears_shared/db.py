"""Async SQLAlchemy 2 engine and session factory on asyncpg, and waiting for the database."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

import asyncpg
import orjson
from asyncpg.exceptions._base import DataError as _ClientDataError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
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


async def copy_rows(
    session: AsyncSession, table: str, schema: str, columns: Sequence[str], records: Iterable[Sequence[object]]
) -> None:
    """Insert ``records`` into ``schema.table`` with one binary ``COPY``, inside the session's open transaction.

    For the bulk inserts of the busiest paths: PostgreSQL inserts COPY's rows in batches (fewer WAL
    records, no array to unpack, no executor per statement) and asyncpg encodes them row by row,
    with no per-element checks of array parameters. Columns left out take their defaults. A unique
    violation raises :class:`sqlalchemy.exc.IntegrityError`, a lost connection
    :class:`sqlalchemy.exc.OperationalError` and any other database error
    :class:`sqlalchemy.exc.DBAPIError`, as a statement run through the session would.

    COPY goes to the driver's connection directly, outside SQLAlchemy, so it must run in the session's
    transaction already begun on the server: that is checked (and begun if need be), never assumed.
    """
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    statement = f"COPY {schema}.{table}"
    if raw is not None and not raw.is_in_transaction():
        await connection.execute(text("SELECT 1"))  # the session's transaction begins with its first statement
    if raw is None or not raw.is_in_transaction():
        raise RuntimeError("copy_rows needs a transaction (the engine is in autocommit?)")
    try:
        await raw.copy_records_to_table(table, schema_name=schema, columns=list(columns), records=records)
    except asyncpg.UniqueViolationError as exc:
        raise IntegrityError(statement, None, exc) from exc
    except asyncpg.PostgresError as exc:
        if (exc.sqlstate or "")[:2] in _CONNECTION_CLASSES:
            raise OperationalError(statement, None, exc) from exc
        raise DBAPIError(statement, None, exc) from exc
    except _ClientDataError as exc:  # a value the driver cannot encode: the data's fault
        raise DBAPIError(statement, None, exc) from exc
    except (asyncpg.InterfaceError, OSError) as exc:
        raise OperationalError(statement, None, exc, connection_invalidated=True) from exc


# SQLSTATE classes of a database that is away rather than of bad data: connection exception,
# insufficient resources, operator intervention, system error.
_CONNECTION_CLASSES = frozenset({"08", "53", "57", "58"})
