"""Case reads: the worklist, one case, its timeline, an account's case."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from arrears_case_manager.cases.state import STATUSES
from arrears_case_manager.deps import CaseServiceDep, SessionDep
from arrears_shared.http import Problem

router = APIRouter(prefix="/v1", tags=["cases"])


@router.get("/cases")
async def list_cases(
    session: SessionDep,
    service: CaseServiceDep,
    status: str | None = Query(default=None, description="Only cases in this status."),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, description="The next_cursor of the previous page."),
) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise Problem(422, "Unprocessable Content", f"status must be one of {', '.join(STATUSES)}", type="validation")
    items = await service.list(session, status, limit, cursor)
    return {"items": items, "next_cursor": items[-1]["case_id"] if len(items) == limit else None}


@router.get("/cases/{case_id}")
async def get_case(case_id: str, session: SessionDep, service: CaseServiceDep) -> dict[str, Any]:
    return await service.get(session, case_id)


@router.get("/cases/{case_id}/timeline")
async def get_timeline(case_id: str, session: SessionDep, service: CaseServiceDep) -> dict[str, Any]:
    return {"case_id": case_id, "entries": await service.timeline(session, case_id)}


@router.get("/accounts/{account_id}/case")
async def get_account_case(account_id: str, session: SessionDep, service: CaseServiceDep) -> dict[str, Any]:
    """The account's open case, or else its most recent one."""
    return await service.for_account(session, account_id)
