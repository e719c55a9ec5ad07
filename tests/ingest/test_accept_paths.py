"""IngestService.accept records a batch of all-new keys and invoice numbers with plain inserts in a
savepoint, and sorts out anything received or claimed before (here or by a concurrent transaction)
with the ON CONFLICT path: the outcomes are the same either way."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from arrears_ingest.events.repository import EventRepository
from arrears_ingest.events.service import IngestService, Status
from arrears_ingest.models import invoice_numbers, outbox, received_events
from arrears_shared.db import make_sessionmaker
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.settings import async_database_url
from tests.ingest.test_inbound_kafka import invoice


class SpyRepository(EventRepository):
    """Counts which path each batch took."""

    def __init__(self) -> None:
        self.fast: list[bool] = []

    async def record_all_new(self, session: AsyncSession, rows: Any, claims: list[tuple[str, str, str]]) -> bool:
        ok = await super().record_all_new(session, rows, claims)
        self.fast.append(ok)
        return ok


@pytest.fixture
async def sessionmaker(ingest_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(async_database_url(ingest_db))
    yield make_sessionmaker(engine)
    await engine.dispose()


def event(account: str, number: str, invoice_id: str, amount: int = 1000, id_: str | None = None) -> Any:
    return orjson.loads(invoice(account, number, invoice_id, amount=amount, id_=id_))


async def queued(sm: async_sessionmaker[AsyncSession], account: str) -> int:
    async with sm() as s:
        return int(await s.scalar(select(func.count()).select_from(outbox).where(outbox.c.key == account)) or 0)


async def test_all_new_batch_takes_the_plain_insert_path(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    repo = SpyRepository()
    service = IngestService(Outbox(outbox), repo)
    batch = [event(account, f"N-{i}", f"I-{i}") for i in range(5)]
    async with sessionmaker() as s, s.begin():
        results = await service.accept(s, batch)
    assert [r.status for r in results] == ["accepted"] * 5
    assert repo.fast == [True]
    assert await queued(sessionmaker, account) == 5
    async with sessionmaker() as s:
        keys = await s.scalar(
            select(func.count()).select_from(received_events).where(received_events.c.account_id == account)
        )
        claims = await s.scalar(
            select(func.count()).select_from(invoice_numbers).where(invoice_numbers.c.account_id == account)
        )
    assert (keys, claims) == (5, 5)


async def test_anything_seen_before_falls_back_and_keeps_the_outcomes(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    repo = SpyRepository()
    service = IngestService(Outbox(outbox), repo)
    first = event(account, "N-1", "I-1")
    async with sessionmaker() as s, s.begin():
        assert [r.status for r in await service.accept(s, [first])] == ["accepted"]
    batch = [
        first,  # the same key and data again: duplicate
        event(account, "N-5", "I-5", amount=7, id_=first["id"]),  # the same key, other data: conflict
        event(account, "N-1", "I-9"),  # N-1 belongs to I-1: conflict
        event(account, "N-2", "I-2"),  # new: accepted
    ]
    async with sessionmaker() as s, s.begin():
        results = await service.accept(s, batch)
    assert [r.status for r in results] == ["duplicate", "conflict", "conflict", "accepted"]
    assert repo.fast == [True, False]
    assert await queued(sessionmaker, account) == 2
    async with sessionmaker() as s:
        found = await s.execute(
            select(invoice_numbers.c.invoice_number, invoice_numbers.c.invoice_id).where(
                invoice_numbers.c.account_id == account
            )
        )
        numbers = {row.invoice_number: row.invoice_id for row in found}
        keys = await s.scalar(
            select(func.count()).select_from(received_events).where(received_events.c.account_id == account)
        )
    assert numbers == {"N-1": "I-1", "N-2": "I-2"}
    assert keys == 2  # the refused claim's key is forgotten, so it may come again


async def test_a_batch_repeated_within_itself_falls_back(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    repo = SpyRepository()
    service = IngestService(Outbox(outbox), repo)
    # Two new events (different ids) claiming one new number for two invoices: the plain insert fails.
    batch = [event(account, "N-1", "I-1"), event(account, "N-1", "I-2")]
    async with sessionmaker() as s, s.begin():
        results = await service.accept(s, batch)
    assert [r.status for r in results] == ["accepted", "conflict"]
    assert repo.fast == [False]
    assert await queued(sessionmaker, account) == 1


async def test_concurrent_transactions_with_the_same_batch(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Two replicas judging the same redelivered batch at once: one accepts it, the other waits for it
    and finds every event a duplicate, whichever order the database lets them in."""
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    batch = [event(account, f"N-{i}", f"I-{i}") for i in range(3)]
    service = IngestService(Outbox(outbox))
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first() -> list[Status]:
        async with sessionmaker() as s, s.begin():
            statuses = [r.status for r in await service.accept(s, batch)]
            holding.set()
            await release.wait()
        return statuses

    async def second() -> list[Status]:
        await holding.wait()
        async with sessionmaker() as s, s.begin():
            return [r.status for r in await service.accept(s, batch)]

    one = asyncio.create_task(first())
    two = asyncio.create_task(second())
    await holding.wait()
    await asyncio.sleep(0)  # let the second start (it blocks on the first's uncommitted keys, or not yet)
    release.set()
    assert await one == ["accepted"] * 3
    assert await two == ["duplicate"] * 3
    assert await queued(sessionmaker, account) == 3
