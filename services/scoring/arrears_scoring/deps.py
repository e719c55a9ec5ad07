"""Annotated dependencies for scoring's endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from arrears_scoring.accounts.service import AccountQueries
from arrears_shared.deps import ReadSessionDep, from_state, read_session

account_queries = from_state("account_queries")

SessionDep = ReadSessionDep
AccountQueriesDep = Annotated[AccountQueries, Depends(account_queries)]

__all__ = ["AccountQueriesDep", "SessionDep", "account_queries", "read_session"]
