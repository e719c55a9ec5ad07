"""The only place scoring's ledger tables are queried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.compute import Adjustment, Documents
from arrears_scoring.models import accounts, documents
from arrears_shared.events.v1 import CreditNoteIssued, Customer, InvoiceIssued, PaymentReceived


class LedgerRepository:
    async def lock_account(self, session: AsyncSession, account_id: str) -> None:
        """Serialize changes to one account (its version must increase by exactly one per change)."""
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('scoring:' || :a))"), {"a": account_id})

    async def put(
        self,
        session: AsyncSession,
        *,
        account_id: str,
        kind: str,
        doc_id: str,
        data: dict[str, Any],
        at: datetime,
        ref_id: str | None = None,
        newest_wins: bool = False,
    ) -> None:
        stmt = pg_insert(documents).values(
            account_id=account_id, kind=kind, doc_id=doc_id, ref_id=ref_id, data=data, at=at
        )
        if newest_wins:
            stmt = stmt.on_conflict_do_update(
                index_elements=[documents.c.account_id, documents.c.kind, documents.c.doc_id],
                set_={"data": stmt.excluded.data, "at": stmt.excluded.at},
                where=documents.c.at <= stmt.excluded.at,
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
        docs = Documents()
        customer: Customer | None = None
        for kind, doc_id, ref_id, data, at in rows:
            if kind == "customer":
                customer = Customer.model_validate(data)
            elif kind == "invoice":
                docs.invoices[doc_id] = InvoiceIssued.model_validate(data)
            elif kind == "adjustment":
                docs.adjustments.append(Adjustment(ref_id, int(data["amount_minor"]), at, doc_id))
            elif kind == "cancellation":
                docs.cancelled.add(ref_id)
            elif kind == "credit_note":
                docs.credit_notes[doc_id] = CreditNoteIssued.model_validate(data)
            elif kind == "payment":
                docs.payments[doc_id] = PaymentReceived.model_validate(data)
            elif kind == "reversal":
                docs.reversed.add(ref_id)
            elif kind == "dispute":
                docs.disputed.add(ref_id)
        return customer, docs

    async def current_version(self, session: AsyncSession, account_id: str) -> int:
        version = await session.scalar(select(accounts.c.version).where(accounts.c.account_id == account_id))
        return int(version or 0)

    async def save_state(
        self, session: AsyncSession, account_id: str, version: int, state: dict[str, Any], at: datetime
    ) -> None:
        stmt = pg_insert(accounts).values(account_id=account_id, version=version, state=state, updated_at=at)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[accounts.c.account_id],
                set_={
                    "version": stmt.excluded.version,
                    "state": stmt.excluded.state,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
        )

    async def get_state(self, session: AsyncSession, account_id: str) -> dict[str, Any] | None:
        state = await session.scalar(select(accounts.c.state).where(accounts.c.account_id == account_id))
        return dict(state) if state is not None else None

    async def count_accounts(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(accounts)) or 0)
