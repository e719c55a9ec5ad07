"""The only place ingest's import batches are queried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.models import account_terms, imports


class ImportRepository:
    async def add(
        self,
        session: AsyncSession,
        *,
        import_id: str,
        format: str,
        source: str,
        filename: str | None,
        created_at: datetime,
        counts: dict[str, int],
        items: list[dict[str, Any]],
    ) -> None:
        await session.execute(
            insert(imports).values(
                import_id=import_id,
                format=format,
                source=source,
                filename=filename,
                created_at=created_at,
                accepted=counts["accepted"],
                duplicates=counts["duplicate"],
                conflicts=counts["conflict"],
                rejected=counts["rejected"],
                ignored=counts["ignored"],
                items=items,
            )
        )

    async def get(self, session: AsyncSession, import_id: str) -> Row[tuple[Any, ...]] | None:
        return (await session.execute(select(imports).where(imports.c.import_id == import_id))).first()


class TermsRepository:
    async def put(self, session: AsyncSession, account_id: str, days: int, at: datetime) -> None:
        stmt = pg_insert(account_terms).values(account_id=account_id, days=days, updated_at=at)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[account_terms.c.account_id], set_={"days": days, "updated_at": at}
            )
        )

    async def get_many(self, session: AsyncSession, account_ids: list[str]) -> dict[str, int]:
        if not account_ids:
            return {}
        rows = await session.execute(
            select(account_terms.c.account_id, account_terms.c.days).where(account_terms.c.account_id.in_(account_ids))
        )
        return {r.account_id: r.days for r in rows}
