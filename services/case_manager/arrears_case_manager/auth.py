"""Bearer API keys with scopes, hashed at rest.

A key reads ``ak_<key_id>_<secret>``. Only SHA-256 of the secret is stored (the secret is 256
random bits, so a slow hash adds nothing); a lookup compares digests in constant time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.repository import CaseRepository
from arrears_shared import apikeys

Scope = Literal["cases:read", "cases:write", "admin"]
SCOPES: tuple[Scope, ...] = ("cases:read", "cases:write", "admin")
PREFIX = "ak_"


@dataclass(frozen=True)
class Principal:
    key_id: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        """How the timeline names who made a change (the key id: never a person's name)."""
        return f"key:{self.key_id}"

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


class KeyService:
    def __init__(self, repository: CaseRepository | None = None) -> None:
        self.repo = repository or CaseRepository()

    async def create(self, session: AsyncSession, name: str, scopes: list[str], now: datetime) -> tuple[str, str]:
        """A new key: (key_id, the full token to hand over once; it is not stored)."""
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
        key = apikeys.mint(PREFIX, 6)
        await self.repo.add_key(
            session,
            {
                "key_id": key.key_id,
                "name": name,
                "secret_hash": key.secret_hash,
                "scopes": sorted(set(scopes)),
                "created_at": now,
            },
        )
        return key.key_id, key.token

    async def revoke(self, session: AsyncSession, key_id: str, now: datetime) -> bool:
        """Revoke a key at once; False if there is no such active key."""
        return await self.repo.revoke_key(session, key_id, now)

    async def authenticate(self, session: AsyncSession, token: str) -> Principal | None:
        parsed = apikeys.parse(token, PREFIX)
        if parsed is None:
            return None
        key_id, secret = parsed
        row = await self.repo.key(session, key_id)
        if row is None or not apikeys.secret_matches(row.secret_hash, secret):
            return None
        return Principal(key_id=key_id, scopes=frozenset(row.scopes))
