"""The case API: the worklist, one case, its timeline, an account's case, what collectors do, reports."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.auth import Principal
from arrears_case_manager.cases.actions import CaseActions, etag
from arrears_case_manager.cases.schemas import (
    AssignIn,
    DisputeIn,
    DisputeResolveIn,
    NoteIn,
    PauseIn,
    PlanIn,
    PromiseIn,
    ReasonIn,
)
from arrears_case_manager.cases.service import WorklistQuery
from arrears_case_manager.cases.state import STATUSES, Status
from arrears_case_manager.deps import (
    CaseActionsDep,
    CaseServiceDep,
    IdempotencyKey,
    IfMatch,
    Reader,
    SessionDep,
    Writer,
)

router = APIRouter(prefix="/v1", tags=["cases"])
Tier = Literal["low", "medium", "high", "critical"]


@router.get("/cases")
async def list_cases(
    session: SessionDep,
    service: CaseServiceDep,
    _who: Reader,
    status: Status | None = Query(
        default=None, description=f"One of {', '.join(STATUSES)}; default: every active case."
    ),
    stage: str | None = Query(default=None, max_length=32),
    tier: Tier | None = Query(default=None),
    assignee: str | None = Query(default=None, max_length=128),
    currency: str | None = Query(default=None, pattern=r"^[A-Z]{3}$"),
    min_amount_minor: int | None = Query(default=None, ge=0, description="Overdue amount in the case's currency."),
    sort: Literal["priority", "age"] = Query(
        default="priority", description="priority: risk x overdue; age: oldest first."
    ),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=512, description="The next_cursor of the previous page."),
) -> dict[str, Any]:
    query = WorklistQuery(status, stage, tier, assignee, currency, min_amount_minor, sort, cursor, limit)
    return await service.worklist(session, query)


@router.get("/cases/{case_id}")
async def get_case(
    case_id: str, session: SessionDep, service: CaseServiceDep, _who: Reader, response: Response
) -> dict[str, Any]:
    """The case with its open invoices, risk and reasons, promises, plans and disputes; ETag is its version."""
    view = await service.get(session, case_id)
    response.headers["ETag"] = etag(view["version"])
    return view


@router.get("/cases/{case_id}/timeline")
async def get_timeline(case_id: str, session: SessionDep, service: CaseServiceDep, _who: Reader) -> dict[str, Any]:
    return {"case_id": case_id, "entries": await service.timeline(session, case_id)}


@router.get("/accounts/{account_id}/case")
async def get_account_case(
    account_id: str, session: SessionDep, service: CaseServiceDep, _who: Reader, response: Response
) -> dict[str, Any]:
    """The account's open case, or else its most recent one."""
    view = await service.for_account(session, account_id)
    response.headers["ETag"] = etag(view["version"])
    return view


@router.get("/reports/aging", tags=["reports"])
async def aging(session: SessionDep, service: CaseServiceDep, _who: Reader) -> dict[str, Any]:
    """Open receivables per currency in aging buckets (current, 1-30, 31-60, 61-90, 90+ days)."""
    return await service.aging(session)


@router.get("/reports/kpis", tags=["reports"])
async def kpis(
    session: SessionDep,
    service: CaseServiceDep,
    _who: Reader,
    first: date | None = Query(default=None, alias="from", description="First day (UTC); default: to - 89 days."),
    last: date | None = Query(default=None, alias="to", description="Last day (UTC), inclusive; default: today."),
) -> dict[str, Any]:
    """Per currency over the period: DSO = E / S x days and CEI = (B + S - E) / (B + S - C) x 100 (B:
    receivables at the start, S: credit sales in the period, E and C: total and not-yet-due receivables
    at the end); promise-kept rate and recovery rate of what settled or closed in the period; cases by
    stage and status now."""
    return await service.kpis(session, first, last)


async def _write(
    actions: CaseActions,
    session: AsyncSession,
    who: Principal,
    case_id: str,
    action: str,
    body: BaseModel,
    response: Response,
    if_match: str | None,
    idempotency_key: str | None,
    target: str | None = None,
) -> dict[str, Any]:
    status, view = await actions.run(
        session, who, case_id, action, body, if_match=if_match, idempotency_key=idempotency_key, target=target
    )
    response.status_code = status
    response.headers["ETag"] = etag(int(view["version"]))
    return view


@router.post("/cases/{case_id}/notes", status_code=201)
async def add_note(
    case_id: str,
    body: NoteIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(actions, session, who, case_id, "notes", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/assign")
async def assign(
    case_id: str,
    body: AssignIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(actions, session, who, case_id, "assign", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/promises", status_code=201)
async def promise(
    case_id: str,
    body: PromiseIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Record a promise to pay (escalation waits until its date plus grace) and confirm it in writing."""
    return await _write(actions, session, who, case_id, "promises", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/payment-plans", status_code=201)
async def payment_plan(
    case_id: str,
    body: PlanIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(actions, session, who, case_id, "payment-plans", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/disputes", status_code=201)
async def dispute(
    case_id: str,
    body: DisputeIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(actions, session, who, case_id, "disputes", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/disputes/{dispute_id}/resolve")
async def resolve_dispute(
    case_id: str,
    dispute_id: str,
    body: DisputeResolveIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(
        actions, session, who, case_id, "resolve-dispute", body, response, if_match, idempotency_key, dispute_id
    )


@router.post("/cases/{case_id}/pause")
async def pause(
    case_id: str,
    body: PauseIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(actions, session, who, case_id, "pause", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/resume")
async def resume(
    case_id: str,
    body: ReasonIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(actions, session, who, case_id, "resume", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/escalate")
async def escalate(
    case_id: str,
    body: ReasonIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Hand the case to an agency or legal now (it leaves automatic escalation)."""
    return await _write(actions, session, who, case_id, "escalate", body, response, if_match, idempotency_key)


@router.post("/cases/{case_id}/write-off")
async def write_off(
    case_id: str,
    body: ReasonIn,
    session: SessionDep,
    actions: CaseActionsDep,
    who: Writer,
    response: Response,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _write(actions, session, who, case_id, "write-off", body, response, if_match, idempotency_key)
