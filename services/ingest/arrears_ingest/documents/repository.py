"""The only place ingest's import batches are queried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.models import imports


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
