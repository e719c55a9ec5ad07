"""GET /v1/accounts/{id}, GET /v1/model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from arrears_scoring.deps import AccountQueriesDep, SessionDep
from arrears_shared.events.v1 import AccountUpdated

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.get("/accounts/{account_id}", response_model=AccountUpdated)
async def get_account(account_id: str, session: SessionDep, queries: AccountQueriesDep) -> dict[str, Any]:
    """The account's receivables state and risk, as last published on ar.accounts.v1."""
    return await queries.get(session, account_id)


@router.get("/model")
async def get_model(queries: AccountQueriesDep) -> dict[str, Any]:
    """The risk model in use: version, features with coefficients, training metrics."""
    return queries.model_card()
