"""The only place ingest's API key table is queried."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.models import api_keys


class ApiKeyRepository:
    async def add(
        self,
        session: AsyncSession,
        *,
        key_id: str,
        source: str,
        name: str,
        secret_sha256: str,
        signing_secret: str | None,
        at: datetime,
    ) -> None:
        await session.execute(
            insert(api_keys).values(
                key_id=key_id,
                source=source,
                name=name,
                secret_sha256=secret_sha256,
                signing_secret=signing_secret,
                created_at=at,
            )
        )

    async def get(self, session: AsyncSession, key_id: str) -> Row[tuple[object, ...]] | None:
        return (await session.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()

    async def all(self, session: AsyncSession) -> list[Row[tuple[object, ...]]]:
        return list(await session.execute(select(api_keys).order_by(api_keys.c.created_at)))

    async def revoke(self, session: AsyncSession, key_id: str, at: datetime) -> bool:
        result = await session.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
            .returning(api_keys.c.key_id)
        )
        return result.first() is not None
