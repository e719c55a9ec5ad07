"""The only place the notifier's tables are queried."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_notifier.models import notifications, suppressions


class DeliveryRepository:
    async def record(self, session: AsyncSession, values: dict[str, Any]) -> bool:
        """Record a requested notification; False if its id was recorded before."""
        stmt = (
            pg_insert(notifications)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(notifications.c.notification_id)
        )
        return (await session.execute(stmt)).first() is not None

    async def claim_due(self, session: AsyncSession, now: datetime, limit: int) -> list[Row[Any]]:
        rows = await session.execute(
            select(notifications)
            .where(notifications.c.status == "pending", notifications.c.next_attempt_at <= now)
            .order_by(notifications.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows)

    async def stale_sending(self, session: AsyncSession, before: datetime, limit: int) -> list[Row[Any]]:
        rows = await session.execute(
            select(notifications)
            .where(notifications.c.status == "sending", notifications.c.updated_at < before)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows)

    async def set(self, session: AsyncSession, notification_id: str, now: datetime, **values: Any) -> None:
        await session.execute(
            update(notifications)
            .where(notifications.c.notification_id == notification_id)
            .values(updated_at=now, **values)
        )

    async def sent_in_window(
        self, session: AsyncSession, account_id: str, channel: str, now: datetime
    ) -> list[datetime]:
        rows = await session.execute(
            select(notifications.c.sent_at)
            .where(
                notifications.c.account_id == account_id,
                notifications.c.channel == channel,
                notifications.c.sent_at > now - timedelta(days=7),
            )
            .order_by(notifications.c.sent_at)
        )
        return [r for r in rows.scalars() if r is not None]

    async def is_suppressed(self, session: AsyncSession, channel: str, address_hash: str) -> bool:
        found = await session.scalar(
            select(func.count())
            .select_from(suppressions)
            .where(suppressions.c.channel == channel, suppressions.c.address_hash == address_hash)
        )
        return bool(found)

    async def suppress(
        self, session: AsyncSession, channel: str, address_hash: str, reason: str, now: datetime
    ) -> None:
        await session.execute(
            pg_insert(suppressions)
            .values(channel=channel, address_hash=address_hash, reason=reason, at=now)
            .on_conflict_do_nothing()
        )

    async def get(self, session: AsyncSession, notification_id: str) -> Row[Any] | None:
        return (
            await session.execute(select(notifications).where(notifications.c.notification_id == notification_id))
        ).first()
