"""What collectors and tools do to a case through the API: every write goes through :meth:`run`,
which holds the account's lock, checks If-Match against the case version, applies the state
machine, records who did it on the timeline, re-evaluates the case's timers, and remembers the
answer under the request's Idempotency-Key, all in one transaction."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.auth import Principal
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
from arrears_case_manager.cases.service import CaseService, _covered
from arrears_case_manager.cases.state import CaseCommand, transition
from arrears_shared.errors import ConflictError, NotFoundError, PermanentError
from arrears_shared.events.v1 import AccountUpdated
from arrears_shared.http import Problem
from arrears_shared.money import format_money

Handler = Callable[[AsyncSession, Row[Any], AccountUpdated, Any, Principal, datetime], Awaitable[dict[str, Any]]]


def etag(version: int) -> str:
    return f'"{version}"'


def _matches(if_match: str, version: int) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    return "*" in tags or etag(version) in tags


class CaseActions:
    def __init__(self, cases: CaseService) -> None:
        self.cases = cases
        self.repo = cases.repo
        self.clock = cases.clock
        self.handlers: dict[str, tuple[Handler, int]] = {
            "notes": (self._note, 201),
            "assign": (self._assign, 200),
            "promises": (self._promise, 201),
            "payment-plans": (self._plan, 201),
            "disputes": (self._dispute, 201),
            "resolve-dispute": (self._resolve_dispute, 200),
            "pause": (self._pause, 200),
            "resume": (self._resume, 200),
            "escalate": (self._escalate, 200),
            "write-off": (self._write_off, 200),
        }

    async def run(
        self,
        session: AsyncSession,
        principal: Principal,
        case_id: str,
        action: str,
        body: BaseModel,
        *,
        if_match: str | None,
        idempotency_key: str | None,
        target: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body); the body's ``version`` is the case's new ETag."""
        handler, status = self.handlers[action]
        payload = {"target": target, "body": body.model_dump(mode="json")}
        fingerprint = hashlib.sha256(f"{action}\n{case_id}\n{payload}".encode()).hexdigest()
        # A fresh session (the API) commits here; one already in a transaction (a caller's unit of
        # work, or a test's) gets a savepoint, so a refused command leaves nothing behind either way.
        async with session.begin_nested() if session.in_transaction() else session.begin():
            if idempotency_key is not None:
                stored = await self.repo.lock_idempotency(session, principal.key_id, idempotency_key)
                if stored is not None:
                    if stored.fingerprint != fingerprint:
                        raise Problem(
                            422,
                            "Unprocessable Content",
                            "this Idempotency-Key was already used for a different request",
                            type="idempotency-key-reused",
                        )
                    return int(stored.status_code), dict(stored.body)
            case = await self.repo.get_case(session, case_id)
            if case is None:
                raise NotFoundError(f"no case {case_id!r}")
            await self.repo.lock_account(session, case.account_id)
            case = await self.repo.lock_case(session, case_id)
            assert case is not None
            if if_match is not None and not _matches(if_match, case.version):
                raise Problem(
                    412,
                    "Precondition Failed",
                    f"the case changed: it is at version {case.version}; fetch it again and retry",
                    type="stale",
                    current_etag=etag(case.version),
                )
            row = await self.repo.account(session, case.account_id)
            if row is None:
                raise NotFoundError(f"no account state for case {case_id!r}")
            account = AccountUpdated.model_validate(row.state)
            now = self.clock.now()
            extra = await handler(session, case, account, body if target is None else (target, body), principal, now)
            await self.cases.evaluate(session, case.account_id, now)
            view = to_jsonable_python(await self.cases.get(session, case_id))
            view.update(extra)
            if idempotency_key is not None:
                await self.repo.save_idempotency(
                    session,
                    {
                        "principal": principal.key_id,
                        "key": idempotency_key,
                        "fingerprint": fingerprint,
                        "status_code": status,
                        "body": view,
                        "created_at": now,
                    },
                )
        return status, view

    # ------------------------------------------------------------------ helpers

    async def _move(
        self,
        session: AsyncSession,
        case: Row[Any],
        command: CaseCommand,
        principal: Principal,
        now: datetime,
        **data: Any,
    ) -> str:
        status = transition(case.status, command)
        await self.repo.update_case(session, case.case_id, status=status)
        await self.repo.add_timeline(
            session, case.case_id, now, command, principal.actor, {"from": case.status, "to": status, **data}
        )
        return status

    async def _cancel_agreements(self, session: AsyncSession, case: Row[Any], now: datetime) -> None:
        """A promise or plan in force ends when the case moves to something else (pause, dispute...)."""
        promise = await self.repo.pending_promise(session, case.case_id)
        if promise is not None:
            await self.repo.settle_promise(session, promise.promise_id, "cancelled", now)
        plan = await self.repo.active_plan(session, case.case_id)
        if plan is not None:
            await self.repo.update_plan(session, plan.plan_id, status="cancelled", settled_at=now)

    # ------------------------------------------------------------------ actions

    async def _note(
        self, session: AsyncSession, case: Row[Any], _a: AccountUpdated, body: NoteIn, who: Principal, now: datetime
    ) -> dict[str, Any]:
        await self.repo.add_timeline(session, case.case_id, now, "note", who.actor, {"text": body.text})
        await self.repo.update_case(session, case.case_id)
        return {}

    async def _assign(
        self, session: AsyncSession, case: Row[Any], _a: AccountUpdated, body: AssignIn, who: Principal, now: datetime
    ) -> dict[str, Any]:
        await self.repo.update_case(session, case.case_id, assignee=body.assignee)
        await self.repo.add_timeline(
            session, case.case_id, now, "assigned", who.actor, {"from": case.assignee, "to": body.assignee}
        )
        return {}

    async def _promise(
        self,
        session: AsyncSession,
        case: Row[Any],
        account: AccountUpdated,
        body: PromiseIn,
        who: Principal,
        now: datetime,
    ) -> dict[str, Any]:
        transition(case.status, "promise")  # 409 before any other check
        invoice_ids, open_minor = _covered(account, body.currency)
        if open_minor <= 0:
            raise PermanentError(f"the account owes nothing in {body.currency}")
        if body.amount_minor > open_minor:
            raise PermanentError(
                f"amount_minor {body.amount_minor} is more than the {open_minor} open in {body.currency}"
            )
        today = now.date()
        horizon = self.cases.policy.agreements.max_promise_days
        if body.date < today or body.date > today + timedelta(days=horizon):
            raise PermanentError(f"date must be between today ({today}) and {horizon} days from now")
        promise_id = str(uuid.uuid4())
        await self.repo.add_promise(
            session,
            {
                "promise_id": promise_id,
                "case_id": case.case_id,
                "currency": body.currency,
                "amount_minor": body.amount_minor,
                "promised_date": body.date,
                "baseline_open_minor": open_minor,
                "invoice_ids": invoice_ids,
                "status": "pending",
                "created_at": now,
                "created_by": who.actor,
            },
        )
        await self._move(session, case, "promise", who, now, promise_id=promise_id)
        await self.cases._emit(
            session,
            "collections.promise.made",
            case.case_id,
            case.account_id,
            now,
            reference_id=promise_id,
            currency=body.currency,
            amount_minor=body.amount_minor,
            due_date=body.date,
            actor=who.actor,
        )
        template = self.cases.policy.agreements.promise_template
        if template:
            locale = account.customer.language if account.customer else "en"
            await self.cases._confirm(
                session,
                case.case_id,
                account,
                "promise",
                promise_id,
                template,
                {
                    "promise": {
                        "currency": body.currency,
                        "amount_minor": body.amount_minor,
                        "amount": format_money(body.amount_minor, body.currency, locale),
                        "date": body.date.isoformat(),
                    }
                },
                now,
            )
        return {"promise_id": promise_id}

    async def _plan(
        self,
        session: AsyncSession,
        case: Row[Any],
        account: AccountUpdated,
        body: PlanIn,
        who: Principal,
        now: datetime,
    ) -> dict[str, Any]:
        transition(case.status, "plan")
        invoice_ids, open_minor = _covered(account, body.currency)
        total = sum(i.amount_minor for i in body.installments)
        if open_minor <= 0:
            raise PermanentError(f"the account owes nothing in {body.currency}")
        if total > open_minor:
            raise PermanentError(
                f"the installments add up to {total}, more than the {open_minor} open in {body.currency}"
            )
        dates = [i.due_date for i in body.installments]
        if dates != sorted(dates) or len(set(dates)) != len(dates):
            raise PermanentError("installments must have strictly increasing due dates")
        if dates[0] < now.date():
            raise PermanentError("the first installment cannot be due in the past")
        await self._cancel_agreements(session, case, now)
        plan_id = str(uuid.uuid4())
        installments: list[dict[str, Any]] = [
            {"seq": n, "due_date": i.due_date.isoformat(), "amount_minor": i.amount_minor, "status": "pending"}
            for n, i in enumerate(body.installments, 1)
        ]
        await self.repo.add_plan(
            session,
            {
                "plan_id": plan_id,
                "case_id": case.case_id,
                "currency": body.currency,
                "baseline_open_minor": open_minor,
                "invoice_ids": invoice_ids,
                "installments": installments,
                "status": "active",
                "created_at": now,
                "created_by": who.actor,
            },
        )
        await self._move(session, case, "plan", who, now, plan_id=plan_id)
        await self.cases._emit(
            session,
            "collections.payment_plan.created",
            case.case_id,
            case.account_id,
            now,
            reference_id=plan_id,
            currency=body.currency,
            amount_minor=total,
            due_date=dates[-1],
            actor=who.actor,
        )
        template = self.cases.policy.agreements.plan_template
        if template:
            locale = account.customer.language if account.customer else "en"
            schedule = [
                {**i, "amount": format_money(int(i["amount_minor"]), body.currency, locale)} for i in installments
            ]
            await self.cases._confirm(
                session,
                case.case_id,
                account,
                "payment_plan",
                plan_id,
                template,
                {
                    "plan": {
                        "currency": body.currency,
                        "total": format_money(total, body.currency, locale),
                        "installments": schedule,
                    }
                },
                now,
            )
        return {"plan_id": plan_id}

    async def _dispute(
        self,
        session: AsyncSession,
        case: Row[Any],
        account: AccountUpdated,
        body: DisputeIn,
        who: Principal,
        now: datetime,
    ) -> dict[str, Any]:
        transition(case.status, "dispute")
        known = {inv.invoice_id for inv in account.open_invoices}
        unknown = [i for i in body.invoice_ids if i not in known]
        if unknown:
            raise PermanentError(f"not open invoices of this account: {', '.join(unknown)}")
        if case.status != "disputed":
            await self._cancel_agreements(session, case, now)
        dispute_id = str(uuid.uuid4())
        await self.repo.add_dispute(
            session,
            {
                "dispute_id": dispute_id,
                "case_id": case.case_id,
                "invoice_ids": sorted(set(body.invoice_ids)),
                "reason": body.reason,
                "status": "open",
                "opened_at": now,
                "opened_by": who.actor,
            },
        )
        await self._move(session, case, "dispute", who, now, dispute_id=dispute_id, invoice_ids=body.invoice_ids)
        await self.cases._emit(
            session,
            "collections.dispute.opened",
            case.case_id,
            case.account_id,
            now,
            reference_id=dispute_id,
            invoice_ids=sorted(set(body.invoice_ids)),
            reason=body.reason,
            actor=who.actor,
        )
        return {"dispute_id": dispute_id}

    async def _resolve_dispute(
        self,
        session: AsyncSession,
        case: Row[Any],
        _a: AccountUpdated,
        target_body: tuple[str, DisputeResolveIn],
        who: Principal,
        now: datetime,
    ) -> dict[str, Any]:
        dispute_id, body = target_body
        dispute = await self.repo.dispute(session, case.case_id, dispute_id)
        if dispute is None:
            raise NotFoundError(f"no dispute {dispute_id!r} on this case")
        if dispute.status != "open":
            raise ConflictError(f"dispute {dispute_id} is already {dispute.status}")
        await self.repo.resolve_dispute(
            session, dispute_id, status="resolved", resolution=body.outcome, resolved_at=now, resolved_by=who.actor
        )
        data = {"dispute_id": dispute_id, "outcome": body.outcome, "note": body.note}
        if await self.repo.open_disputes(session, case.case_id) == 0:
            await self._move(session, case, "dispute_resolved", who, now, **data)
        else:
            await self.repo.add_timeline(session, case.case_id, now, "dispute_resolved", who.actor, data)
            await self.repo.update_case(session, case.case_id)
        await self.cases._emit(
            session,
            "collections.dispute.resolved",
            case.case_id,
            case.account_id,
            now,
            reference_id=dispute_id,
            invoice_ids=list(dispute.invoice_ids),
            reason=body.outcome,
            actor=who.actor,
        )
        return {"dispute_id": dispute_id}

    async def _pause(
        self, session: AsyncSession, case: Row[Any], _a: AccountUpdated, body: PauseIn, who: Principal, now: datetime
    ) -> dict[str, Any]:
        transition(case.status, "pause")
        if body.until is not None and body.until <= now:
            raise PermanentError("until must be in the future")
        await self._cancel_agreements(session, case, now)
        await self.repo.update_case(session, case.case_id, paused_until=body.until)
        await self._move(
            session, case, "pause", who, now, reason=body.reason, until=body.until.isoformat() if body.until else None
        )
        return {}

    async def _resume(
        self, session: AsyncSession, case: Row[Any], _a: AccountUpdated, body: ReasonIn, who: Principal, now: datetime
    ) -> dict[str, Any]:
        await self._move(session, case, "resume", who, now, reason=body.reason)
        await self.repo.update_case(session, case.case_id, paused_until=None)
        return {}

    async def _escalate(
        self, session: AsyncSession, case: Row[Any], _a: AccountUpdated, body: ReasonIn, who: Principal, now: datetime
    ) -> dict[str, Any]:
        transition(case.status, "escalate")
        await self._cancel_agreements(session, case, now)
        await self._move(session, case, "escalate", who, now, reason=body.reason)
        await self.cases._emit(
            session,
            "collections.case.handed_off",
            case.case_id,
            case.account_id,
            now,
            status="escalated_external",
            reason=body.reason,
            actor=who.actor,
        )
        return {}

    async def _write_off(
        self, session: AsyncSession, case: Row[Any], _a: AccountUpdated, body: ReasonIn, who: Principal, now: datetime
    ) -> dict[str, Any]:
        transition(case.status, "write_off")
        await self._cancel_agreements(session, case, now)
        await self._move(session, case, "write_off", who, now, reason=body.reason)
        await self.repo.update_case(
            session, case.case_id, closed_at=now, closed_reason="written_off", next_action_at=None
        )
        await self.cases._emit(
            session,
            "collections.case.written_off",
            case.case_id,
            case.account_id,
            now,
            status="written_off",
            currency=case.currency,
            amount_minor=case.overdue_minor,
            reason=body.reason,
            actor=who.actor,
        )
        return {}
