"""The only place scoring's ledger tables are queried."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.compute import Documents
from arrears_scoring.ledger.documents import DocRow, from_rows
from arrears_scoring.models import account_balances, accounts, documents, open_items
from arrears_shared.events.v1 import AccountUpdated, Customer


@dataclass(frozen=True)
class OpenItem:
    invoice_id: str
    currency: str
    open_minor: int
    due_date: date
    static_logit: float


class LedgerRepository:
    async def lock_account(self, session: AsyncSession, account_id: str) -> None:
        """Serialize changes to one account (its version must increase by exactly one per change)."""
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('scoring:' || :a))"), {"a": account_id})

    async def put(self, session: AsyncSession, account_id: str, row: DocRow, event_id: str) -> None:
        """Store one document; a redelivered or older copy changes nothing (see documents.wins)."""
        stmt = pg_insert(documents).values(
            account_id=account_id,
            kind=row.kind,
            doc_id=row.doc_id,
            ref_id=row.ref_id,
            data=row.data,
            at=row.at,
            event_id=event_id,
        )
        if row.newest_wins:
            stmt = stmt.on_conflict_do_update(
                index_elements=[documents.c.account_id, documents.c.kind, documents.c.doc_id],
                set_={"data": stmt.excluded.data, "at": stmt.excluded.at, "event_id": stmt.excluded.event_id},
                where=tuple_(documents.c.at, func.coalesce(documents.c.event_id, ""))
                <= tuple_(stmt.excluded.at, stmt.excluded.event_id),
            )
        else:
            stmt = stmt.on_conflict_do_nothing()
        await session.execute(stmt)

    async def load(self, session: AsyncSession, account_id: str) -> tuple[Customer | None, Documents]:
        rows = await session.execute(
            select(documents.c.kind, documents.c.doc_id, documents.c.ref_id, documents.c.data, documents.c.at).where(
                documents.c.account_id == account_id
            )
        )
        return from_rows(rows.tuples())

    async def current_version(self, session: AsyncSession, account_id: str) -> int:
        version = await session.scalar(select(accounts.c.version).where(accounts.c.account_id == account_id))
        return int(version or 0)

    async def save_state(
        self,
        session: AsyncSession,
        account_id: str,
        update: AccountUpdated,
        items: list[OpenItem],
        base_logit: float | None,
        at: datetime,
        aged_on: date,
    ) -> None:
        """The published state and, in the same transaction, the summary the re-age and filters use."""
        summary = {
            "version": update.version,
            "state": update.model_dump(mode="json"),
            "updated_at": at,
            "tier": update.risk.tier,
            "probability": update.risk.probability,
            "max_days_past_due": update.max_days_past_due,
            "oldest_due_date": update.oldest_due_date,
            "aged_on": aged_on,
            "base_logit": base_logit,
        }
        stmt = pg_insert(accounts).values(account_id=account_id, **summary)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[accounts.c.account_id], set_={k: stmt.excluded[k] for k in summary}
            )
        )
        await session.execute(delete(open_items).where(open_items.c.account_id == account_id))
        if items:
            await session.execute(
                insert(open_items),
                [
                    {
                        "account_id": account_id,
                        "invoice_id": i.invoice_id,
                        "currency": i.currency,
                        "open_minor": i.open_minor,
                        "due_date": i.due_date,
                        "static_logit": i.static_logit,
                    }
                    for i in items
                ],
            )
        await session.execute(delete(account_balances).where(account_balances.c.account_id == account_id))
        if update.balances:
            await session.execute(
                insert(account_balances),
                [
                    {
                        "account_id": account_id,
                        "currency": b.currency,
                        "open_minor": b.open_minor,
                        "overdue_minor": b.overdue_minor,
                        "credit_minor": b.credit_minor,
                    }
                    for b in update.balances
                ],
            )

    async def get_state(self, session: AsyncSession, account_id: str) -> dict[str, Any] | None:
        state = await session.scalar(select(accounts.c.state).where(accounts.c.account_id == account_id))
        return dict(state) if state is not None else None

    async def count_accounts(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(accounts)) or 0)
