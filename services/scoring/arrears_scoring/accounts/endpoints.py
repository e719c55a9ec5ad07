"""GET /v1/accounts, GET /v1/accounts/{id}, GET /v1/model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from arrears_scoring.deps import AccountQueriesDep, SessionDep
from arrears_shared.events.v1 import AccountUpdated, Tier
from arrears_shared.money import Currency

router = APIRouter(prefix="/v1", tags=["accounts"])


class AccountPage(BaseModel):
    items: list[AccountUpdated]
    next_cursor: str | None = None


@router.get("/accounts", response_model=AccountPage)
async def list_accounts(
    session: SessionDep,
    queries: AccountQueriesDep,
    tier: Annotated[list[Tier] | None, Query(description="Risk tiers to include (repeatable).")] = None,
    currency: Annotated[Currency | None, Query(description="Only accounts with a balance in this currency.")] = None,
    min_overdue_minor: Annotated[
        int | None, Query(ge=0, description="Overdue amount in `currency` at least this (minor units).")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=400, description="next_cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Account states in account-id order, filtered by risk tier, currency and minimum overdue."""
    return await queries.list(
        session, tiers=tier, currency=currency, min_overdue_minor=min_overdue_minor, cursor=cursor, limit=limit
    )


@router.get("/accounts/{account_id}", response_model=AccountUpdated)
async def get_account(account_id: str, session: SessionDep, queries: AccountQueriesDep) -> dict[str, Any]:
    """The account's receivables state and risk, as last published on ar.accounts.v1."""
    return await queries.get(session, account_id)


@router.get("/model")
async def get_model(queries: AccountQueriesDep) -> dict[str, Any]:
    """The risk model in use: version, features with coefficients and sources, training metrics."""
    return queries.model_card()
