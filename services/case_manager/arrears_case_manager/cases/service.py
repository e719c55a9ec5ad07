"""Deciding, for an account, whether a case opens, escalates, or resolves, and what each step sends.

One function, :meth:`CaseService.evaluate`, makes every decision, whether an account update
arrived or a timer fired; both paths hold the account's advisory lock, so the consumer and any
number of sweeper replicas never act on one account at once. A case entering a level fires that
level's channels and actions once (notification ids are derived from case and level, so even a
replay would be deduplicated downstream) and never replays the levels it skipped.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.repository import CaseRepository
from arrears_case_manager.cases.state import ESCALATING, transition
from arrears_case_manager.policy.models import Level, Policy
from arrears_shared.clock import Clock
from arrears_shared.errors import NotFoundError
from arrears_shared.events.envelope import new_event
from arrears_shared.events.v1 import (
    AccountUpdated,
    CaseEvent,
    DeliveryUpdated,
    NotificationRequested,
    Recipient,
)
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.money import format_money
from arrears_shared.topics import EVENTS, NOTIFICATIONS

SOURCE = "arrears/case-manager"
SYSTEM = "system"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


class CaseService:
    def __init__(
        self,
        outbox: Outbox,
        clock: Clock,
        policy: Policy,
        payment_link_template: str,
        notification_ttl: timedelta = timedelta(hours=72),
        repository: CaseRepository | None = None,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.policy = policy
        self.payment_link_template = payment_link_template
        self.notification_ttl = notification_ttl
        self.repo = repository or CaseRepository()

    # ------------------------------------------------------------------ inputs

    async def on_account_updated(self, session: AsyncSession, _event: object, update: AccountUpdated) -> None:
        await self.repo.lock_account(session, update.account_id)
        known = await self.repo.account(session, update.account_id)
        if known is not None and known.version >= update.version:
            return  # stale or repeated: a newer state is already applied
        now = self.clock.now()
        await self.repo.save_account(session, update.account_id, update.version, update.model_dump(mode="json"), now)
        await self.evaluate(session, update.account_id, now)

    async def on_delivery_updated(self, session: AsyncSession, _event: object, delivery: DeliveryUpdated) -> None:
        case = await self.repo.get_case(session, delivery.case_id)
        if case is None:
            return
        await self.repo.add_timeline(
            session,
            case.case_id,
            delivery.at,
            "delivery",
            "notifier",
            {
                "notification_id": delivery.notification_id,
                "channel": delivery.channel,
                "status": delivery.status,
                "reason": delivery.reason,
                "provider_message_id": delivery.provider_message_id,
            },
        )

    async def sweep(self, session: AsyncSession, limit: int) -> int:
        """Fire every timer that is due (called by each replica's sweeper loop)."""
        now = self.clock.now()
        due = await self.repo.due_accounts(session, now, limit)
        for account_id in due:
            await self.repo.lock_account(session, account_id)
            await self.evaluate(session, account_id, now)
        return len(due)

    async def due_summary(self, session: AsyncSession) -> tuple[int, float]:
        """Timers due and not fired yet, and how many seconds late the oldest is (0 when none)."""
        now = self.clock.now()
        count, oldest = await self.repo.due_summary(session, now)
        return count, max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0

    # ------------------------------------------------------------------ the decision

    async def evaluate(self, session: AsyncSession, account_id: str, now: datetime) -> None:
        row = await self.repo.account(session, account_id)
        if row is None:
            return
        account = AccountUpdated.model_validate(row.state)
        case = await self.repo.open_case(session, account_id)
        owed = sum(b.open_minor for b in account.balances)
        if owed <= 0 or account.oldest_due_date is None:
            if case is not None:
                await self._resolve(session, case, account, now)
            await self.repo.set_wake(session, account_id, None)
            return
        day = (now.date() - account.oldest_due_date).days
        level = self.policy.level_for(day)
        if case is None:
            if level is None:
                first = self.policy.levels[0]
                await self.repo.set_wake(session, account_id, _midnight(account.oldest_due_date + timedelta(first.day)))
                return
            case = await self._open(session, account, level, now)
        elif case.status in ESCALATING and self.policy.index(level.name if level else None) > self.policy.index(
            case.stage
        ):
            assert level is not None
            await self._enter(session, case.case_id, case.stage, level, account, now)
        next_level = self.policy.next_after(level)
        wake = _midnight(account.oldest_due_date + timedelta(next_level.day)) if next_level else None
        await self.repo.set_wake(session, account_id, wake)
        await self.repo.update_case(session, case.case_id, next_action_at=wake)

    async def _open(self, session: AsyncSession, account: AccountUpdated, level: Level, now: datetime) -> Row[Any]:
        case_id = str(uuid.uuid4())
        await self.repo.create_case(
            session,
            {
                "case_id": case_id,
                "account_id": account.account_id,
                "status": "open",
                "stage": None,
                "opened_at": now,
            },
        )
        await self.repo.add_timeline(session, case_id, now, "case_opened", SYSTEM, {"account_version": account.version})
        await self._emit(session, "collections.case.opened", case_id, account.account_id, now, status="open")
        await self._enter(session, case_id, None, level, account, now)
        case = await self.repo.get_case(session, case_id)
        assert case is not None
        return case

    async def _enter(
        self,
        session: AsyncSession,
        case_id: str,
        previous: str | None,
        level: Level,
        account: AccountUpdated,
        now: datetime,
    ) -> None:
        await self.repo.update_case(session, case_id, stage=level.name)
        await self.repo.add_timeline(
            session, case_id, now, "stage_changed", SYSTEM, {"from": previous, "to": level.name}
        )
        await self._emit(
            session,
            "collections.case.stage_changed",
            case_id,
            account.account_id,
            now,
            stage=level.name,
            previous_stage=previous,
        )
        if not self._meets_minimum(level, account):
            await self.repo.add_timeline(
                session,
                case_id,
                now,
                "level_skipped",
                SYSTEM,
                {"level": level.name, "reason": "below the level's minimum amount"},
            )
            return
        for channel in level.channels:
            if channel in ("email", "sms"):
                await self._request(session, case_id, level, channel, account, now)
            elif channel == "call_task":
                await self.repo.add_timeline(session, case_id, now, "call_task", SYSTEM, {"level": level.name})
                await self._emit(
                    session, "collections.call_task.created", case_id, account.account_id, now, stage=level.name
                )
            elif channel == "letter":
                await self.repo.add_timeline(session, case_id, now, "letter_requested", SYSTEM, {"level": level.name})
        for action in level.actions:
            if action == "credit_hold":
                await self.repo.update_case(session, case_id, credit_hold="placed")
                await self.repo.add_timeline(session, case_id, now, "credit_hold_placed", SYSTEM, {})
                await self._emit(session, "collections.credit_hold.placed", case_id, account.account_id, now)
            elif action == "external_handoff":
                await self.repo.update_case(session, case_id, status=transition("open", "escalate"))
                await self.repo.add_timeline(session, case_id, now, "handed_off", SYSTEM, {})
                await self._emit(
                    session,
                    "collections.case.handed_off",
                    case_id,
                    account.account_id,
                    now,
                    status="escalated_external",
                )
            else:
                await self.repo.add_timeline(session, case_id, now, action, SYSTEM, {"level": level.name})

    def _meets_minimum(self, level: Level, account: AccountUpdated) -> bool:
        if not level.min_amount_minor:
            return True
        return any(b.overdue_minor >= level.min_amount_minor.get(b.currency, 0) for b in account.balances)

    async def _resolve(self, session: AsyncSession, case: Row[Any], account: AccountUpdated, now: datetime) -> None:
        status = transition(case.status, "pay_in_full")
        await self.repo.update_case(
            session,
            case.case_id,
            status=status,
            closed_at=now,
            next_action_at=None,
            credit_hold="lifted" if case.credit_hold == "placed" else case.credit_hold,
        )
        if case.credit_hold == "placed":
            await self.repo.add_timeline(session, case.case_id, now, "credit_hold_lifted", SYSTEM, {})
            await self._emit(session, "collections.credit_hold.lifted", case.case_id, account.account_id, now)
        await self.repo.add_timeline(
            session, case.case_id, now, "case_resolved", SYSTEM, {"account_version": account.version}
        )
        await self._emit(session, "collections.case.resolved", case.case_id, account.account_id, now, status=status)

    # ------------------------------------------------------------------ outputs

    async def _request(
        self, session: AsyncSession, case_id: str, level: Level, channel: str, account: AccountUpdated, now: datetime
    ) -> None:
        customer = account.customer
        reason: str | None = None
        if customer is None:
            reason = "no customer record"
        elif channel == "email" and not (customer.email and customer.consent.email):
            reason = "no email address with consent"
        elif channel == "sms" and not (customer.phone and customer.consent.sms):
            reason = "no phone number with SMS consent"
        if reason is not None or customer is None:
            await self.repo.add_timeline(
                session,
                case_id,
                now,
                "notification_skipped",
                SYSTEM,
                {"level": level.name, "channel": channel, "reason": reason},
            )
            return
        notification_id = f"{case_id}:{level.name}:{channel}"
        request = NotificationRequested(
            notification_id=notification_id,
            case_id=case_id,
            account_id=account.account_id,
            channel=channel,
            template=level.template,
            locale=customer.language,
            recipient=Recipient(
                email=customer.email if channel == "email" else None,
                phone=customer.phone if channel == "sms" else None,
                timezone=customer.timezone,
            ),
            variables=self.variables(case_id, level, account, now),
            expires_at=now + self.notification_ttl,
        )
        await self.outbox.add(
            session,
            NOTIFICATIONS,
            new_event(
                type="collections.notification.requested",
                source=SOURCE,
                subject=account.account_id,
                data=request,
                time=now,
                id=notification_id,
            ),
        )
        await self.repo.add_timeline(
            session,
            case_id,
            now,
            "notification_requested",
            SYSTEM,
            {
                "notification_id": notification_id,
                "channel": channel,
                "template": level.template,
                "level": level.name,
            },
        )

    def variables(self, case_id: str, level: Level, account: AccountUpdated, now: datetime) -> dict[str, Any]:
        customer = account.customer
        locale = customer.language if customer else "en"
        totals = [
            {
                "currency": b.currency,
                "amount_minor": b.open_minor,
                "formatted": format_money(b.open_minor, b.currency, locale),
            }
            for b in account.balances
            if b.open_minor > 0
        ]
        return {
            "customer_name": customer.name if customer else "",
            "level": level.name,
            "invoices": [
                {
                    "number": inv.invoice_number,
                    "currency": inv.currency,
                    "open_minor": inv.open_minor,
                    "open": format_money(inv.open_minor, inv.currency, locale),
                    "due_date": inv.due_date.isoformat(),
                    "days_past_due": inv.days_past_due,
                }
                for inv in account.open_invoices
            ],
            "totals": totals,
            "total_due": ", ".join(str(t["formatted"]) for t in totals),
            "max_days_past_due": account.max_days_past_due,
            "deadline": (now.date() + timedelta(days=14)).isoformat(),
            "payment_link": self.payment_link_template.format(account_id=account.account_id, case_id=case_id),
        }

    async def _emit(
        self, session: AsyncSession, type_: str, case_id: str, account_id: str, now: datetime, **fields: Any
    ) -> None:
        data = CaseEvent(case_id=case_id, account_id=account_id, **fields)
        await self.outbox.add(
            session, EVENTS, new_event(type=type_, source=SOURCE, subject=account_id, data=data, time=now)
        )

    # ------------------------------------------------------------------ reads

    async def get(self, session: AsyncSession, case_id: str) -> dict[str, Any]:
        case = await self.repo.get_case(session, case_id)
        if case is None:
            raise NotFoundError(f"no case {case_id!r}")
        account = await self.repo.account(session, case.account_id)
        return self._view(case, account.state if account else None)

    async def for_account(self, session: AsyncSession, account_id: str) -> dict[str, Any]:
        case = await self.repo.open_case(session, account_id) or await self.repo.latest_case_for_account(
            session, account_id
        )
        if case is None:
            raise NotFoundError(f"no case for account {account_id!r}")
        account = await self.repo.account(session, account_id)
        return self._view(case, account.state if account else None)

    async def timeline(self, session: AsyncSession, case_id: str) -> list[dict[str, Any]]:
        if await self.repo.get_case(session, case_id) is None:
            raise NotFoundError(f"no case {case_id!r}")
        return [
            {"id": r.id, "at": r.at, "kind": r.kind, "actor": r.actor, "data": r.data}
            for r in await self.repo.timeline(session, case_id)
        ]

    async def list(
        self, session: AsyncSession, status: str | None, limit: int, after: str | None
    ) -> list[dict[str, Any]]:
        return [self._view(r, None) for r in await self.repo.list_cases(session, status, limit, after)]

    @staticmethod
    def _view(case: Row[Any], state: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case_id": case.case_id,
            "account_id": case.account_id,
            "status": case.status,
            "stage": case.stage,
            "opened_at": case.opened_at,
            "closed_at": case.closed_at,
            "next_action_at": case.next_action_at,
            "assignee": case.assignee,
            "credit_hold": case.credit_hold,
            "version": case.version,
        }
        if state is not None:
            out["open_invoices"] = state.get("open_invoices", [])
            out["balances"] = state.get("balances", [])
            out["risk"] = state.get("risk")
        return out
