"""API keys and request signatures.

A key reads ``ark_<key id>_<secret>``. Only the SHA-256 of the secret is stored: the secret is 32
random bytes, so a fast hash is enough (nothing to brute-force), and a stolen table reveals no key.

A key created with a signing secret also requires every request to carry
``X-Arrears-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` made with that
secret, within ``tolerance`` seconds of the server's clock. A webhook sender that cannot set an
API key header may instead send ``X-Arrears-Key-Id: <key id>`` with the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.auth.repository import ApiKeyRepository
from arrears_shared import apikeys

PREFIX = "ark_"


class AuthError(Exception):
    """Authentication failed (401)."""


@dataclass(frozen=True)
class Caller:
    key_id: str | None
    source: str | None  # None: authentication is disabled, any source may be used


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    source: str
    api_key: str
    signing_secret: str | None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Arrears-Signature`` header value for ``body`` at ``timestamp`` (senders and tests)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _parse_key(api_key: str) -> tuple[str, str]:
    parsed = apikeys.parse(api_key, PREFIX)
    if parsed is None:
        raise AuthError("malformed API key")
    return parsed


def _check_signature(secret: str, header: str | None, body: bytes, now: datetime, tolerance: int) -> None:
    if not header:
        raise AuthError("this key requires an X-Arrears-Signature header")
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        raise AuthError("malformed X-Arrears-Signature header") from None
    given = parts.get("v1", "")
    if abs(now.timestamp() - timestamp) > tolerance:
        raise AuthError("the signature's timestamp is too far from the server's clock")
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise AuthError("the signature does not match the body")


class ApiKeyService:
    def __init__(self, repository: ApiKeyRepository | None = None) -> None:
        self.repository = repository or ApiKeyRepository()

    async def create(self, session: AsyncSession, *, source: str, name: str, signing: bool, at: datetime) -> CreatedKey:
        key = apikeys.mint(PREFIX, 8)
        signing_secret = secrets.token_urlsafe(32) if signing else None
        await self.repository.add(
            session,
            key_id=key.key_id,
            source=source,
            name=name,
            secret_sha256=key.secret_hash,
            signing_secret=signing_secret,
            at=at,
        )
        return CreatedKey(key.key_id, source, key.token, signing_secret)

    async def revoke(self, session: AsyncSession, key_id: str, at: datetime) -> bool:
        return await self.repository.revoke(session, key_id, at)

    async def list(self, session: AsyncSession) -> list[dict[str, object]]:
        return [
            {
                "key_id": r.key_id,
                "source": r.source,
                "name": r.name,
                "signed": r.signing_secret is not None,
                "created_at": r.created_at,
                "revoked_at": r.revoked_at,
            }
            for r in await self.repository.all(session)
        ]

    async def authenticate(
        self,
        session: AsyncSession,
        *,
        api_key: str | None,
        key_id_header: str | None,
        signature: str | None,
        body: bytes,
        now: datetime,
        tolerance: int,
    ) -> Caller:
        """The caller behind a request's headers, or raise :class:`AuthError`."""
        if api_key:
            key_id, secret = _parse_key(api_key)
        elif key_id_header and signature:
            key_id, secret = key_id_header, None
        else:
            raise AuthError("send an API key: Authorization: Bearer <key> or X-API-Key: <key>")
        row = await self.repository.get(session, key_id)
        if row is None or row.revoked_at is not None:
            raise AuthError("unknown or revoked API key")
        if secret is not None and not apikeys.secret_matches(str(row.secret_sha256), secret):
            raise AuthError("unknown or revoked API key")
        if row.signing_secret is not None:
            _check_signature(str(row.signing_secret), signature, body, now, tolerance)
        elif secret is None:
            raise AuthError("this key has no signing secret; send the API key itself")
        return Caller(str(row.key_id), str(row.source))
