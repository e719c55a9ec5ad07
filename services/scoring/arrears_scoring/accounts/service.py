"""Read-side service for account states."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.repository import LedgerRepository
from arrears_scoring.risk.model import RiskModel
from arrears_shared.errors import NotFoundError


class AccountQueries:
    def __init__(self, model: RiskModel, repository: LedgerRepository | None = None) -> None:
        self.model = model
        self.repository = repository or LedgerRepository()

    async def get(self, session: AsyncSession, account_id: str) -> dict[str, Any]:
        state = await self.repository.get_state(session, account_id)
        if state is None:
            raise NotFoundError(f"no account {account_id!r}")
        return state

    def model_card(self) -> dict[str, Any]:
        return {
            "version": self.model.version,
            "intercept": self.model.intercept,
            "features": [
                {"name": f.name, "coef": f.coef, "center": f.center, "cap": f.cap} for f in self.model.features
            ],
            "metrics": self.model.metrics,
        }
