"""API keys as every service issues them: ``<prefix><key_id>_<secret>``, only a SHA-256 of the secret stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class MintedKey:
    key_id: str
    secret: str
    token: str  # handed over once, never stored

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def mint(prefix: str, id_bytes: int = 8) -> MintedKey:
    key_id = secrets.token_hex(id_bytes)
    secret = secrets.token_urlsafe(32)
    return MintedKey(key_id, secret, f"{prefix}{key_id}_{secret}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str, prefix: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed token, else None."""
    if not token.startswith(prefix):
        return None
    key_id, sep, secret = token[len(prefix) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


def secret_matches(stored_hash: str, secret: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(stored_hash, hash_secret(secret))
