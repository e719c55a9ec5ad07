"""The only place the case manager's tables are queried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.state import CLOSED
from arrears_case_manager.models import accounts, cases, timeline


class CaseRepository:
    async def lock_account(self, session: AsyncSession, account_id: str) -> None:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('cases:' || :a))"), {"a": account_id})

    async def account(self, session: AsyncSession, account_id: str) -> Row[Any] | None:
        return (await session.execute(select(accounts).where(accounts.c.account_id == account_id))).first()

    async def save_account(
        self, session: AsyncSession, account_id: str, version: int, state: dict[str, Any], now: datetime
    ) -> None:
        stmt = pg_insert(accounts).values(account_id=account_id, version=version, state=state, updated_at=now)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[accounts.c.account_id],
                set_={"version": stmt.excluded.version, "state": stmt.excluded.state, "updated_at": now},
            )
        )

    async def set_wake(self, session: AsyncSession, account_id: str, wake_at: datetime | None) -> None:
        await session.execute(update(accounts).where(accounts.c.account_id == account_id).values(wake_at=wake_at))

    async def due_accounts(self, session: AsyncSession, now: datetime, limit: int) -> list[str]:
        """Accounts whose timer has fired, locked so that no other replica takes them."""
        rows = await session.execute(
            select(accounts.c.account_id)
            .where(accounts.c.wake_at <= now)
            .order_by(accounts.c.wake_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows.scalars())

    async def due_summary(self, session: AsyncSession, now: datetime) -> tuple[int, datetime | None]:
        """How many timers are due and unfired, and the oldest one's time (for the operator's metrics)."""
        row = (
            await session.execute(select(func.count(), func.min(accounts.c.wake_at)).where(accounts.c.wake_at <= now))
        ).one()
        return int(row[0]), row[1]

    async def open_case(self, session: AsyncSession, account_id: str) -> Row[Any] | None:
        return (
            await session.execute(
                select(cases).where(cases.c.account_id == account_id, cases.c.status.notin_(list(CLOSED)))
            )
        ).first()

    async def get_case(self, session: AsyncSession, case_id: str) -> Row[Any] | None:
        return (await session.execute(select(cases).where(cases.c.case_id == case_id))).first()

    async def latest_case_for_account(self, session: AsyncSession, account_id: str) -> Row[Any] | None:
        return (
            await session.execute(
                select(cases).where(cases.c.account_id == account_id).order_by(cases.c.opened_at.desc()).limit(1)
            )
        ).first()

    async def create_case(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(cases).values(**values))

    async def update_case(self, session: AsyncSession, case_id: str, **values: Any) -> None:
        await session.execute(
            update(cases).where(cases.c.case_id == case_id).values(version=cases.c.version + 1, **values)
        )

    async def add_timeline(
        self, session: AsyncSession, case_id: str, at: datetime, kind: str, actor: str, data: dict[str, Any]
    ) -> None:
        await session.execute(insert(timeline).values(case_id=case_id, at=at, kind=kind, actor=actor, data=data))

    async def timeline(self, session: AsyncSession, case_id: str) -> list[Row[Any]]:
        rows = await session.execute(
            select(timeline).where(timeline.c.case_id == case_id).order_by(timeline.c.at, timeline.c.id)
        )
        return list(rows)

    async def list_cases(
        self, session: AsyncSession, status: str | None, limit: int, after: str | None
    ) -> list[Row[Any]]:
        stmt = select(cases).order_by(cases.c.case_id).limit(limit)
        if status:
            stmt = stmt.where(cases.c.status == status)
        if after:
            stmt = stmt.where(cases.c.case_id > after)
        return list(await session.execute(stmt))
