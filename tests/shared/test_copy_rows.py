"""copy_rows and Outbox.copy_payloads against the real database: COPY writes inside the session's
transaction (never beside it), the same outbox rows as add_payloads, and database errors come out as
the exceptions a statement run through the session would raise."""

from __future__ import annotations

import uuid

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from arrears_ingest.models import SCHEMA, invoice_numbers
from arrears_scoring.models import outbox as scoring_outbox
from arrears_shared.db import copy_rows, make_sessionmaker
from arrears_shared.messaging.consumer import is_infrastructure
from arrears_shared.messaging.outbox import Outbox, shard_of

COLUMNS = ("account_id", "invoice_number", "invoice_id")


async def _claims(engine: AsyncEngine, account: str) -> list[tuple[str, str]]:
    async with make_sessionmaker(engine)() as s:
        rows = await s.execute(
            select(invoice_numbers.c.invoice_number, invoice_numbers.c.invoice_id)
            .where(invoice_numbers.c.account_id == account)
            .order_by(invoice_numbers.c.invoice_number)
        )
        return [(n, i) for n, i in rows]


async def test_copy_as_the_first_statement_is_inside_the_transaction(engine: AsyncEngine) -> None:
    """COPY goes to the driver's connection: even as the session's first statement it must join the
    session's transaction, so a rollback leaves nothing and a commit keeps everything."""
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s:
        await copy_rows(s, "invoice_numbers", SCHEMA, COLUMNS, [(account, "N-1", "I-1")])
        await s.rollback()
    assert await _claims(engine, account) == []
    async with sessionmaker() as s, s.begin():
        await copy_rows(s, "invoice_numbers", SCHEMA, COLUMNS, [(account, "N-1", "I-1"), (account, "N-2", "I-2")])
    assert await _claims(engine, account) == [("N-1", "I-1"), ("N-2", "I-2")]


async def test_a_unique_violation_is_an_integrity_error_and_the_savepoint_recovers(engine: AsyncEngine) -> None:
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s, s.begin():
        await copy_rows(s, "invoice_numbers", SCHEMA, COLUMNS, [(account, "N-1", "I-1")])
        with pytest.raises(IntegrityError) as caught:
            async with s.begin_nested():
                await copy_rows(
                    s, "invoice_numbers", SCHEMA, COLUMNS, [(account, "N-2", "I-2"), (account, "N-1", "I-9")]
                )
        assert not is_infrastructure(caught.value)
        # The savepoint rolled back: the transaction goes on, with nothing of the failed COPY in it.
        await copy_rows(s, "invoice_numbers", SCHEMA, COLUMNS, [(account, "N-3", "I-3")])
    assert await _claims(engine, account) == [("N-1", "I-1"), ("N-3", "I-3")]


async def test_bad_data_is_not_infrastructure(engine: AsyncEngine) -> None:
    """A value PostgreSQL refuses (text cannot hold NUL) is the data's fault, not the database being away."""
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s, s.begin():
        with pytest.raises(DBAPIError) as caught:
            async with s.begin_nested():
                await copy_rows(s, "invoice_numbers", SCHEMA, COLUMNS, [("A\x00", "N-1", "I-1")])
    assert not isinstance(caught.value, OperationalError)
    assert not is_infrastructure(caught.value)


async def test_copy_payloads_writes_the_rows_add_payloads_writes(engine: AsyncEngine) -> None:
    topic = f"test.{uuid.uuid4().hex[:10]}"
    outbox = Outbox(scoring_outbox)
    rows: list[tuple[str, str | None, bytes]] = [(topic, f"KEY-{n % 7}", orjson.dumps({"n": n})) for n in range(50)]
    rows.append((topic, None, b'{"n":50}'))
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s, s.begin():
        await outbox.copy_payloads(s, rows, headers={"origin": "copy"})
        await outbox.add_payloads(s, rows, headers={"origin": "copy"})
    async with sessionmaker() as s:
        found = list(
            await s.execute(
                select(scoring_outbox.c.key, scoring_outbox.c.shard, scoring_outbox.c.payload, scoring_outbox.c.headers)
                .where(scoring_outbox.c.topic == topic)
                .order_by(scoring_outbox.c.id)
            )
        )
        assert (
            await s.scalar(
                select(func.count()).select_from(scoring_outbox).where(scoring_outbox.c.created_at.is_(None))
            )
            == 0
        )
    copied, inserted = found[: len(rows)], found[len(rows) :]
    expected = [(k, shard_of(k), p) for _, k, p in rows]
    assert [(r.key, r.shard, bytes(r.payload)) for r in copied] == expected
    assert [(r.key, r.shard, bytes(r.payload)) for r in inserted] == expected
    # The same headers (the trace context of the work that emits them, and the ones given).
    assert {frozenset(r.headers) for r in copied} == {frozenset(r.headers) for r in inserted}
    assert all(r.headers["origin"] == "copy" for r in copied)
    async with sessionmaker() as s, s.begin():
        await s.execute(scoring_outbox.delete().where(scoring_outbox.c.topic == topic))
