"""Read-side service for account states and the model in use."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.repository import LedgerRepository, list_states
from arrears_scoring.risk.model import RiskModel
from arrears_shared.errors import NotFoundError
from arrears_shared.http import Problem


def encode_cursor(account_id: str) -> str:
    return base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(400, "Bad cursor", "cursor is not one this API returned", type="bad-cursor") from None


class AccountQueries:
    def __init__(self, model: RiskModel, repository: LedgerRepository | None = None) -> None:
        self.model = model
        self.repository = repository or LedgerRepository()

    async def get(self, session: AsyncSession, account_id: str) -> dict[str, Any]:
        state = await self.repository.get_state(session, account_id)
        if state is None:
            raise NotFoundError(f"no account {account_id!r}")
        return state

    async def list(
        self,
        session: AsyncSession,
        *,
        tiers: Sequence[str] | None,
        currency: str | None,
        min_overdue_minor: int | None,
        cursor: str | None,
        limit: int,
    ) -> dict[str, Any]:
        if min_overdue_minor is not None and currency is None:
            raise Problem(
                422,
                "Currency needed",
                "min_overdue_minor compares amounts of one currency: give currency as well",
                type="currency-needed",
            )
        rows = await list_states(
            session,
            tiers=tiers,
            currency=currency,
            min_overdue_minor=min_overdue_minor,
            after=decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
        )
        more = len(rows) > limit
        items = rows[:limit]
        return {"items": items, "next_cursor": encode_cursor(items[-1]["account_id"]) if more and items else None}

    def model_card(self) -> dict[str, Any]:
        return self.model.as_dict()
