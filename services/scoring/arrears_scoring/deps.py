"""Annotated dependencies for scoring's endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.accounts.service import AccountQueries
from arrears_shared.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _runtime(request).sessionmaker() as session:
        yield session


def _queries(request: Request) -> AccountQueries:
    queries: AccountQueries = request.app.state.account_queries
    return queries


SessionDep = Annotated[AsyncSession, Depends(_session)]
AccountQueriesDep = Annotated[AccountQueries, Depends(_queries)]
