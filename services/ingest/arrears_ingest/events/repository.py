"""The only place ingest's event tables are queried."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.models import invoice_numbers, received_events


class EventRepository:
    async def record_received(self, session: AsyncSession, rows: list[dict[str, str | None]]) -> set[tuple[str, str]]:
        """Insert (source, id) keys; return the ones that were new."""
        if not rows:
            return set()
        stmt = (
            pg_insert(received_events)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(received_events.c.source, received_events.c.event_id)
        )
        return {(r.source, r.event_id) for r in await session.execute(stmt)}

    async def digests(self, session: AsyncSession, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The content digest recorded for each of ``keys`` already received."""
        if not keys:
            return {}
        rows = await session.execute(
            select(received_events.c.source, received_events.c.event_id, received_events.c.digest).where(
                tuple_(received_events.c.source, received_events.c.event_id).in_(keys)
            )
        )
        return {(r.source, r.event_id): r.digest for r in rows}

    async def accounts_for_invoice_numbers(self, session: AsyncSession, numbers: list[str]) -> dict[str, set[str]]:
        """For each invoice number among ``numbers``, the accounts that have an invoice with it."""
        if not numbers:
            return {}
        rows = await session.execute(
            select(invoice_numbers.c.invoice_number, invoice_numbers.c.account_id).where(
                invoice_numbers.c.invoice_number.in_(numbers)
            )
        )
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(r.invoice_number, set()).add(r.account_id)
        return out

    async def forget_received(self, session: AsyncSession, keys: Iterable[tuple[str, str]]) -> None:
        keys = list(keys)
        if keys:
            await session.execute(
                delete(received_events).where(tuple_(received_events.c.source, received_events.c.event_id).in_(keys))
            )

    async def claim_invoice_numbers(
        self, session: AsyncSession, claims: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], str]:
        """Claim (account_id, invoice_number) for invoice_id; return the claims refused, with the owning invoice."""
        if not claims:
            return {}
        await session.execute(
            pg_insert(invoice_numbers)
            .values([{"account_id": a, "invoice_number": n, "invoice_id": i} for a, n, i in claims])
            .on_conflict_do_nothing()
        )
        pairs = [(a, n) for a, n, _ in claims]
        owners = await session.execute(
            select(invoice_numbers.c.account_id, invoice_numbers.c.invoice_number, invoice_numbers.c.invoice_id).where(
                tuple_(invoice_numbers.c.account_id, invoice_numbers.c.invoice_number).in_(pairs)
            )
        )
        owner = {(r.account_id, r.invoice_number): r.invoice_id for r in owners}
        return {(a, n, i): owner[(a, n)] for a, n, i in claims if owner.get((a, n), i) != i}
