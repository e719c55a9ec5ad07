"""The only place the stored risk models are queried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.models import risk_models


class ModelRepository:
    async def active(self, session: AsyncSession) -> dict[str, Any] | None:
        raw = await session.scalar(
            select(risk_models.c.model)
            .where(risk_models.c.active)
            .order_by(risk_models.c.created_at.desc(), risk_models.c.version.desc())
            .limit(1)
        )
        return dict(raw) if raw is not None else None

    async def save(self, session: AsyncSession, model: dict[str, Any], at: datetime) -> None:
        """Store a fitted model and make it the active one (earlier ones stay, inactive, for audit)."""
        await session.execute(update(risk_models).values(active=False))
        stmt = pg_insert(risk_models).values(version=model["version"], model=model, created_at=at, active=True)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[risk_models.c.version],
                set_={"model": stmt.excluded.model, "created_at": stmt.excluded.created_at, "active": True},
            )
        )
