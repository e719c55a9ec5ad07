"""Deciding, for an account, whether a case opens, escalates, or resolves, and what each step sends.

One function, :meth:`CaseService.evaluate`, makes every decision, whether an account update
arrived or a timer fired; both paths hold the account's advisory lock, so the consumer and any
number of sweeper replicas never act on one account at once. A case entering a level fires that
level's channels and actions once (notification ids are derived from case and level, so even a
replay would be deduplicated downstream) and never replays the levels it skipped.

The consumer (:meth:`CaseService.apply_updates`) and the sweeper (:meth:`CaseService.sweep`) apply
many accounts at once: the same :meth:`CaseService.evaluate` runs for each, over rows loaded in a few
statements and with its writes done in bulk at the end (see :mod:`arrears_case_manager.cases.batch`).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, PrivateAttr
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.batch import (
    BatchRepository,
    BufferedOutbox,
    JsonText,
    lock_accounts,
    try_lock_accounts,
)
from arrears_case_manager.cases.fees import fees_for
from arrears_case_manager.cases.repository import CaseRepository
from arrears_case_manager.cases.state import ACTIVE, CLOSED, ESCALATING, transition
from arrears_case_manager.policy.models import Ladder, Level, Policy
from arrears_shared.clock import Clock
from arrears_shared.errors import NotFoundError, PermanentError
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.events.v1 import (
    AccountUpdated,
    CaseEvent,
    Customer,
    DeliveryUpdated,
    NotificationRequested,
    Recipient,
)
from arrears_shared.messaging.consumer import is_infrastructure
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.money import exponent, format_money
from arrears_shared.topics import EVENTS, NOTIFICATIONS

log = logging.getLogger(__name__)

SOURCE = "arrears/case-manager"
# A due timer whose account cannot be evaluated (a state or policy that no longer validates) is retried this much later.
SWEEP_RETRY_AFTER = timedelta(hours=1)
KPI_DEFAULT_DAYS = 90
SYSTEM = "system"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def _settled(account: AccountUpdated) -> bool:
    """Nothing owed (nothing open, or nothing with a due date): an open case resolves as paid."""
    return account.oldest_due_date is None or sum(b.open_minor for b in account.balances) <= 0


def _open_in(account: AccountUpdated, currency: str) -> int:
    return sum(b.open_minor for b in account.balances if b.currency == currency)


def _covered(account: AccountUpdated, currency: str) -> tuple[list[str], int]:
    """The invoices open in ``currency`` and their open total (what an agreement covers)."""
    invoices = [i for i in account.open_invoices if i.currency == currency and i.open_minor > 0]
    return [i.invoice_id for i in invoices], sum(i.open_minor for i in invoices)


def _paid_since(account: AccountUpdated, baseline: int, invoice_ids: list[str]) -> int:
    """How much of ``baseline`` (the covered invoices' open total when agreed) is no longer open.
    An invoice that left the open list was paid, credited or cancelled: in each case no longer owed."""
    ids = set(invoice_ids)
    return baseline - sum(i.open_minor for i in account.open_invoices if i.invoice_id in ids)


def _worklist(account: AccountUpdated) -> dict[str, Any]:
    """The case's worklist columns: its main currency (most overdue), the overdue amount in it,
    and a priority that weighs the risk of not being paid against the amount overdue
    (probability x overdue in major units x 100; no FX conversion between currencies)."""
    balances = [b for b in account.balances if b.open_minor > 0]
    if not balances:
        return {"tier": account.risk.tier, "currency": None, "overdue_minor": 0, "priority": 0}
    main = max(balances, key=lambda b: (b.overdue_minor, b.open_minor))
    major = Decimal(main.overdue_minor).scaleb(-exponent(main.currency))
    priority = int(Decimal(str(account.risk.probability)) * major * 100)
    return {
        "tier": account.risk.tier,
        "currency": main.currency,
        "overdue_minor": main.overdue_minor,
        "priority": priority,
    }


class _OwnEvent(CloudEvent):
    """An envelope this service built from its own, already valid parts, serialized once."""

    _payload: bytes = PrivateAttr(default=b"")

    def to_json(self) -> bytes:
        return self._payload


_GIVEN = ("specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data")


def _event(type_: str, subject: str, data: BaseModel, time: datetime, id: str | None = None) -> CloudEvent:
    """The envelope :func:`arrears_shared.events.envelope.new_event` builds around ``data``, without
    validating it again (every part is this service's own and already valid: ``data`` a validated
    model, ``time`` from the clock) and with its JSON (:meth:`CloudEvent.to_json`, the same bytes)
    built once, by orjson, from the dict it holds.

    The instance is the one ``_OwnEvent.model_construct(**fields)`` returns (the same ``__dict__``,
    fields set, extra and private attributes), set up directly: model_construct walks every field of
    the model for aliases and defaults on each call, which cost more than everything else here."""
    payload = data.model_dump(mode="json", exclude_none=True)
    event_id = id or str(uuid.uuid4())
    at = time.astimezone(UTC)
    fields: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": type_,
        "time": at,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": payload,
    }
    # As model_construct sets them: the one field not given (dataschema) at its default, in field order.
    values = {k: v for k, v in fields.items() if k != "data"} | {"dataschema": None, "data": payload}
    event = _OwnEvent.__new__(_OwnEvent)
    object.__setattr__(event, "__dict__", values)
    object.__setattr__(event, "__pydantic_fields_set__", set(_GIVEN))
    object.__setattr__(event, "__pydantic_extra__", {})  # extra="allow", none given
    object.__setattr__(event, "__pydantic_private__", {"_payload": orjson.dumps(fields, option=orjson.OPT_UTC_Z)})
    return event


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
        known = await self.repo.account_version(session, update.account_id)
        if known is not None and known >= update.version:
            return  # stale or repeated: a newer state is already applied
        now = self.clock.now()
        await self.repo.save_account(session, update.account_id, update.version, update.model_dump(mode="json"), now)
        await self.repo.record_receivables(session, [update])  # the KPIs' history: keep beside save_account
        await self.evaluate(session, update.account_id, now, update)

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

    async def apply_updates(self, session: AsyncSession, events: Sequence[tuple[object, AccountUpdated]]) -> None:
        """Apply a run of account updates as :meth:`on_account_updated` would one after another, with a
        few statements for the whole run (the consumer's batch route).

        The accounts' advisory locks are taken in one order; an update not newer than the account's
        applied version is skipped. Every newer update is evaluated in arrival order, intermediate
        versions included (a version that settled the debt resolves the case even if a later one in
        the batch owes again), against rows loaded once and writes kept in memory; only the newest
        state per account is stored. All-or-nothing: on error the consumer applies the run one by one.
        """
        updates = [u for _, u in events]
        if not updates:
            return
        await lock_accounts(session, (u.account_id for u in updates))
        known = await self.repo.account_versions(session, sorted({u.account_id for u in updates}))
        stored = set(known)  # the accounts that have a row
        fresh: list[AccountUpdated] = []
        for update in updates:
            applied = known.get(update.account_id)
            if applied is not None and applied >= update.version:
                continue  # stale or repeated: a newer state is already applied
            known[update.account_id] = update.version
            fresh.append(update)
        if not fresh:
            return
        batch, repo, outbox = self._batch()
        repo.stored = stored
        await repo.load(session, [u.account_id for u in fresh], {u.account_id for u in fresh if _settled(u)})
        now = self.clock.now()
        for update in fresh:
            await batch.evaluate(session, update.account_id, now, update)
        await self.repo.record_receivables(session, fresh)  # the KPIs' history, as on_account_updated keeps it
        newest = {u.account_id: u for u in fresh}  # the last fresh one of an account is its newest
        for update in newest.values():
            state = JsonText(update.model_dump_json())  # what model_dump(mode="json") stores, serialized once
            await repo.save_account(session, update.account_id, update.version, state, now)
        await repo.flush(session)
        await outbox.flush(session)

    async def sweep(self, session: AsyncSession, limit: int) -> int:
        """Fire up to ``limit`` due timers at once; how many fired (see :meth:`sweep_batch`)."""
        return (await self.sweep_batch(session, limit))[1]

    async def sweep_batch(self, session: AsyncSession, limit: int) -> tuple[int, int]:
        """Fire up to ``limit`` due timers at once (each replica's sweeper loop): how many were
        claimed and how many fired (fewer when some accounts were busy; a full claim means more
        may be due).

        The due accounts are claimed with FOR UPDATE SKIP LOCKED, so two replicas never take the same
        one; an account whose advisory lock is held elsewhere (an update or a command on it right now)
        is left for a later sweep. Each is evaluated as of now: a case enters the level it has reached,
        never replaying the ones it missed while nobody swept."""
        now = self.clock.now()
        due = await self.repo.claim_due(session, now, limit)
        locked = await try_lock_accounts(session, (a for a, _ in due))
        claimed = len(due)
        due = [(a, state) for a, state in due if a in locked]
        if not due:
            return claimed, 0
        try:
            async with session.begin_nested():
                await self._fire(session, due, now)
            return claimed, len(due)
        except Exception as exc:
            if is_infrastructure(exc):
                raise
        # One account's state or policy no longer evaluates: fire the others one by one, and move the
        # failing one's timer on by SWEEP_RETRY_AFTER so that it cannot hold every other timer back.
        fired = 0
        for item in due:
            try:
                async with session.begin_nested():
                    await self._fire(session, [item], now)
                fired += 1
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                log.exception("timer could not fire; retried later", extra={"account_id": item[0]})
                await self.repo.set_wake(session, item[0], now + SWEEP_RETRY_AFTER)
        return claimed, fired

    async def _fire(self, session: AsyncSession, due: list[tuple[str, str]], now: datetime) -> None:
        """Evaluate these claimed, locked accounts together (one load, bulk writes)."""
        batch, repo, outbox = self._batch()
        states = [(account_id, AccountUpdated.model_validate_json(state)) for account_id, state in due]
        await repo.load(session, [a for a, _ in states], {a for a, s in states if _settled(s)})
        for account_id, account in states:
            await batch.evaluate(session, account_id, now, account)
        await repo.flush(session)
        await outbox.flush(session)

    def _batch(self) -> tuple[CaseService, BatchRepository, BufferedOutbox]:
        """This service over a :class:`BatchRepository` and a :class:`BufferedOutbox` (same policy, clock, links)."""
        repo = BatchRepository(self.repo)
        outbox = BufferedOutbox(self.outbox)
        service = CaseService(
            outbox, self.clock, self.policy, self.payment_link_template, self.notification_ttl, repository=repo
        )
        return service, repo, outbox

    async def due_summary(self, session: AsyncSession) -> tuple[int, float]:
        """Timers due and not fired yet, and how many seconds late the oldest is (0 when none)."""
        now = self.clock.now()
        count, oldest = await self.repo.due_summary(session, now)
        return count, max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0

    # ------------------------------------------------------------------ the decision

    async def evaluate(
        self, session: AsyncSession, account_id: str, now: datetime, account: AccountUpdated | None = None
    ) -> None:
        """Bring the account's case up to date with its state and the time, and set its next timer.

        Called with the account's advisory lock held (consumer, sweeper and API commands alike);
        ``account`` is the state just saved, when the caller has it.
        """
        if account is None:
            row = await self.repo.account(session, account_id)
            if row is None:
                return
            account = AccountUpdated.model_validate(row.state)
        case = await self.repo.open_case(session, account_id)
        owed = sum(b.open_minor for b in account.balances)
        if owed <= 0 or account.oldest_due_date is None:  # as _settled (which does not narrow the type)
            if case is not None:
                await self._settle_agreements_paid(session, case, account, now)
                await self._resolve(session, case, account, now)
            await self.repo.set_wake(session, account_id, None)
            return
        ladder = self.ladder_for(account)
        day = (now.date() - account.oldest_due_date).days
        level = ladder.level_for(day)
        if case is None:
            if await self._written_off_already(session, account):
                await self.repo.set_wake(session, account_id, None)
                return
            if level is None:
                first = ladder.levels[0]
                await self.repo.set_wake(session, account_id, _midnight(account.oldest_due_date + timedelta(first.day)))
                return
            case = await self._open(session, account, level, now)
        wakes: list[datetime] = []
        status: str = case.status
        if status == "promised":
            status = await self._check_promise(session, case, account, now, wakes)
        elif status == "payment_plan":
            status = await self._check_plan(session, case, account, now, wakes)
        elif status == "paused" and case.paused_until is not None:
            if now >= case.paused_until:
                status = transition("paused", "resume")
                await self.repo.update_case(session, case.case_id, status=status, paused_until=None)
                await self.repo.add_timeline(session, case.case_id, now, "resumed", SYSTEM, {"reason": "pause ended"})
            else:
                wakes.append(case.paused_until)
        if status in ESCALATING:
            if level is not None and ladder.index(level.name) > ladder.index(case.stage):
                status = await self._enter(session, case.case_id, case.stage, level, account, now)
            elif ladder.index(level.name if level else None) < ladder.index(case.stage):
                await self._step_back(session, case.case_id, case.stage, level, account, now)
            nxt = ladder.next_after(level)
            if nxt is not None:
                wakes.append(_midnight(account.oldest_due_date + timedelta(nxt.day)))
        wake = min(wakes) if wakes else None
        if status == "escalated_external" or status in CLOSED:
            wake = None
        await self.repo.set_wake(session, account_id, wake)
        # Only if the timer or a worklist column moved: a re-evaluation that changes nothing (a daily re-age
        # of the same amounts) writes no row version and index entries, and keeps the case's ETag.
        await self.repo.update_case(session, case.case_id, changes_only=True, next_action_at=wake, **_worklist(account))

    def ladder_for(self, account: AccountUpdated) -> Ladder:
        segment = account.customer.segment if account.customer else None
        return self.policy.ladder(account.risk.tier, segment)

    async def _written_off_already(self, session: AsyncSession, account: AccountUpdated) -> bool:
        """A written-off debt does not reopen; a new invoice falling due after the write-off does."""
        last = await self.repo.latest_case_for_account(session, account.account_id)
        if last is None or last.status != "written_off" or last.closed_at is None:
            return False
        return all(inv.due_date <= last.closed_at.date() for inv in account.open_invoices)

    async def _check_promise(
        self, session: AsyncSession, case: Row[Any], account: AccountUpdated, now: datetime, wakes: list[datetime]
    ) -> str:
        promise = await self.repo.pending_promise(session, case.case_id)
        if promise is None:  # nothing pending (should not happen): escalation resumes
            status = transition("promised", "promise_broken")
            await self.repo.update_case(session, case.case_id, status=status)
            return status
        paid = _paid_since(account, promise.baseline_open_minor, list(promise.invoice_ids))
        if paid >= promise.amount_minor:
            await self.repo.settle_promise(session, promise.promise_id, "kept", now)
            status = transition("promised", "promise_kept")
            await self.repo.update_case(session, case.case_id, status=status)
            await self.repo.add_timeline(
                session,
                case.case_id,
                now,
                "promise_kept",
                SYSTEM,
                {"promise_id": promise.promise_id, "paid_minor": paid},
            )
            await self._emit(
                session,
                "collections.promise.kept",
                case.case_id,
                account.account_id,
                now,
                reference_id=promise.promise_id,
                currency=promise.currency,
                amount_minor=promise.amount_minor,
            )
            return status
        deadline = self._deadline(promise.promised_date, account, self.policy.agreements.promise_grace_days)
        if now < deadline:
            wakes.append(deadline)
            return "promised"
        await self.repo.settle_promise(session, promise.promise_id, "broken", now)
        status = transition("promised", "promise_broken")
        await self.repo.update_case(session, case.case_id, status=status)
        await self.repo.add_timeline(
            session,
            case.case_id,
            now,
            "promise_broken",
            SYSTEM,
            {"promise_id": promise.promise_id, "paid_minor": max(paid, 0), "promised_minor": promise.amount_minor},
        )
        await self._emit(
            session,
            "collections.promise.broken",
            case.case_id,
            account.account_id,
            now,
            reference_id=promise.promise_id,
            currency=promise.currency,
            amount_minor=promise.amount_minor,
            due_date=promise.promised_date,
        )
        return status

    async def _check_plan(
        self, session: AsyncSession, case: Row[Any], account: AccountUpdated, now: datetime, wakes: list[datetime]
    ) -> str:
        plan = await self.repo.active_plan(session, case.case_id)
        if plan is None:
            status = transition("payment_plan", "plan_defaulted")
            await self.repo.update_case(session, case.case_id, status=status)
            return status
        paid = _paid_since(account, plan.baseline_open_minor, list(plan.invoice_ids))
        installments = [dict(i) for i in plan.installments]
        cumulative = 0
        changed = False
        for inst in installments:
            cumulative += int(inst["amount_minor"])
            if inst["status"] == "paid":
                continue
            if paid >= cumulative:
                inst["status"] = "paid"
                changed = True
                await self.repo.add_timeline(
                    session,
                    case.case_id,
                    now,
                    "installment_paid",
                    SYSTEM,
                    {"plan_id": plan.plan_id, "seq": inst["seq"]},
                )
                continue
            deadline = self._deadline(
                date.fromisoformat(inst["due_date"]), account, self.policy.agreements.installment_grace_days
            )
            if now < deadline:
                wakes.append(deadline)
                break
            inst["status"] = "missed"
            await self.repo.update_plan(
                session, plan.plan_id, installments=installments, status="defaulted", settled_at=now
            )
            status = transition("payment_plan", "plan_defaulted")
            await self.repo.update_case(session, case.case_id, status=status)
            await self.repo.add_timeline(
                session,
                case.case_id,
                now,
                "installment_missed",
                SYSTEM,
                {"plan_id": plan.plan_id, "seq": inst["seq"], "paid_minor": max(paid, 0), "due_minor": cumulative},
            )
            await self._emit(
                session,
                "collections.payment_plan.installment_missed",
                case.case_id,
                account.account_id,
                now,
                reference_id=plan.plan_id,
                currency=plan.currency,
                amount_minor=int(inst["amount_minor"]),
                due_date=date.fromisoformat(inst["due_date"]),
            )
            return status
        if all(i["status"] == "paid" for i in installments):
            await self.repo.update_plan(
                session, plan.plan_id, installments=installments, status="completed", settled_at=now
            )
            status = transition("payment_plan", "plan_completed")
            await self.repo.update_case(session, case.case_id, status=status)
            await self.repo.add_timeline(
                session, case.case_id, now, "payment_plan_completed", SYSTEM, {"plan_id": plan.plan_id}
            )
            await self._emit(
                session,
                "collections.payment_plan.completed",
                case.case_id,
                account.account_id,
                now,
                reference_id=plan.plan_id,
            )
            return status
        if changed:
            await self.repo.update_plan(session, plan.plan_id, installments=installments)
        return "payment_plan"

    async def _settle_agreements_paid(
        self, session: AsyncSession, case: Row[Any], account: AccountUpdated, now: datetime
    ) -> None:
        """Full payment keeps a pending promise and completes an active plan."""
        promise = await self.repo.pending_promise(session, case.case_id)
        if promise is not None:
            await self.repo.settle_promise(session, promise.promise_id, "kept", now)
            await self.repo.add_timeline(
                session, case.case_id, now, "promise_kept", SYSTEM, {"promise_id": promise.promise_id}
            )
            await self._emit(
                session,
                "collections.promise.kept",
                case.case_id,
                account.account_id,
                now,
                reference_id=promise.promise_id,
                currency=promise.currency,
                amount_minor=promise.amount_minor,
            )
        plan = await self.repo.active_plan(session, case.case_id)
        if plan is not None:
            done = [{**dict(i), "status": "paid"} for i in plan.installments]
            await self.repo.update_plan(session, plan.plan_id, installments=done, status="completed", settled_at=now)
            await self.repo.add_timeline(
                session, case.case_id, now, "payment_plan_completed", SYSTEM, {"plan_id": plan.plan_id}
            )
            await self._emit(
                session,
                "collections.payment_plan.completed",
                case.case_id,
                account.account_id,
                now,
                reference_id=plan.plan_id,
            )

    @staticmethod
    def _deadline(day: date, account: AccountUpdated, grace_days: int) -> datetime:
        """The start of the day after ``day`` plus the grace, in the customer's own timezone, as UTC."""
        zone = ZoneInfo(account.customer.timezone) if account.customer else UTC
        local = datetime.combine(day + timedelta(days=1 + grace_days), time(0, 0), tzinfo=zone)
        return local.astimezone(UTC)

    async def _open(self, session: AsyncSession, account: AccountUpdated, level: Level, now: datetime) -> Row[Any]:
        case_id = str(uuid.uuid4())
        worklist = _worklist(account)
        await self.repo.create_case(
            session,
            {
                "case_id": case_id,
                "account_id": account.account_id,
                "status": "open",
                "stage": None,
                "opened_at": now,
                "opened_overdue_minor": worklist["overdue_minor"],
                **worklist,
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
    ) -> str:
        """Enter ``level``: fire its channels and actions once. Returns the case's status after it."""
        status = "open"
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
            return status
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
                await self._place_hold(session, case_id, account.account_id, now)
            elif action == "late_fee":
                await self._assess_fees(session, case_id, level, account, now)
            elif action == "external_handoff":
                status = transition("open", "escalate")
                await self.repo.update_case(session, case_id, status=status)
                await self.repo.add_timeline(session, case_id, now, "handed_off", SYSTEM, {"level": level.name})
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
        return status

    async def _step_back(
        self,
        session: AsyncSession,
        case_id: str,
        previous: str,
        level: Level | None,
        account: AccountUpdated,
        now: datetime,
    ) -> None:
        """A payment cleared the oldest debt: the case's stage follows the (younger) oldest open invoice.
        Nothing fires on the way down; the later levels fire again as the remaining debt ages."""
        stage = level.name if level else None
        await self.repo.update_case(session, case_id, stage=stage)
        await self.repo.add_timeline(
            session,
            case_id,
            now,
            "stage_changed",
            SYSTEM,
            {"from": previous, "to": stage, "reason": "a payment left a younger oldest open invoice"},
        )
        await self._emit(
            session,
            "collections.case.stage_changed",
            case_id,
            account.account_id,
            now,
            stage=stage,
            previous_stage=previous,
            reason="payment",
        )

    async def _place_hold(self, session: AsyncSession, case_id: str, account_id: str, now: datetime) -> None:
        case = await self.repo.get_case(session, case_id)
        if case is None or case.credit_hold == "placed":
            return
        await self.repo.update_case(session, case_id, credit_hold="placed")
        await self.repo.add_timeline(session, case_id, now, "credit_hold_placed", SYSTEM, {})
        await self._emit(session, "collections.credit_hold.placed", case_id, account_id, now)

    async def _assess_fees(
        self, session: AsyncSession, case_id: str, level: Level, account: AccountUpdated, now: datetime
    ) -> None:
        assessed = False
        charged = await self.repo.fees_assessed(session, case_id)
        for inv in account.open_invoices:
            if inv.disputed:
                continue
            days_past_due = max((now.date() - inv.due_date).days, 0)  # as of now, not the last re-age
            for fee in fees_for(inv.open_minor, days_past_due, inv.terms):
                if (inv.invoice_id, fee.kind) in charged:
                    continue  # each invoice is charged each kind of fee once per case
                assessed = True
                await self.repo.add_timeline(
                    session,
                    case_id,
                    now,
                    "late_fee_assessed",
                    SYSTEM,
                    {
                        "invoice_id": inv.invoice_id,
                        "kind": fee.kind,
                        "currency": inv.currency,
                        "amount_minor": fee.amount_minor,
                        "basis": fee.basis,
                        "level": level.name,
                    },
                )
                await self._emit(
                    session,
                    "collections.late_fee.assessed",
                    case_id,
                    account.account_id,
                    now,
                    currency=inv.currency,
                    amount_minor=fee.amount_minor,
                    invoice_ids=[inv.invoice_id],
                    reference_id=f"{case_id}:{level.name}:{inv.invoice_id}:{fee.kind}",
                    reason=f"{fee.kind}: {fee.basis}",
                )
        if not assessed:
            await self.repo.add_timeline(
                session,
                case_id,
                now,
                "late_fee_not_assessed",
                SYSTEM,
                {"level": level.name, "reason": "no open invoice's terms provide a late fee or interest"},
            )

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
            closed_reason="paid",
            next_action_at=None,
            credit_hold="lifted" if case.credit_hold == "placed" else case.credit_hold,
            overdue_minor=0,
            priority=0,
        )
        if case.credit_hold == "placed":
            await self.repo.add_timeline(session, case.case_id, now, "credit_hold_lifted", SYSTEM, {})
            await self._emit(session, "collections.credit_hold.lifted", case.case_id, account.account_id, now)
        await self.repo.add_timeline(
            session, case.case_id, now, "case_resolved", SYSTEM, {"account_version": account.version}
        )
        await self._emit(session, "collections.case.resolved", case.case_id, account.account_id, now, status=status)
        template = self.policy.agreements.thank_you_template
        if template:
            await self._confirm(session, case.case_id, account, "thank_you", "resolved", template, {}, now)

    # ------------------------------------------------------------------ outputs

    async def _request(
        self, session: AsyncSession, case_id: str, level: Level, channel: str, account: AccountUpdated, now: datetime
    ) -> None:
        customer = account.customer
        reason = _unreachable(customer, channel)
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
        # One per level and channel for the debt whose age reached it (a payment that leaves a younger
        # debt lets the level fire again for that debt; a replay of the same one is deduplicated).
        await self._send(
            session,
            account,
            customer,
            channel,
            notification_id=f"{case_id}:{level.name}:{account.oldest_due_date}:{channel}",
            case_id=case_id,
            template=level.template,
            variables=self.variables(case_id, level, account, now),
            timeline={"level": level.name},
            now=now,
        )

    async def _send(
        self,
        session: AsyncSession,
        account: AccountUpdated,
        customer: Customer,
        channel: str,
        *,
        notification_id: str,
        case_id: str,
        template: str,
        variables: dict[str, Any],
        timeline: dict[str, Any],
        now: datetime,
    ) -> None:
        """Request one notification through the outbox and note it on the case's timeline."""
        request = NotificationRequested(
            notification_id=notification_id,
            case_id=case_id,
            account_id=account.account_id,
            channel=channel,
            template=template,
            locale=customer.language,
            recipient=Recipient(
                email=customer.email if channel == "email" else None,
                phone=customer.phone if channel == "sms" else None,
                timezone=customer.timezone,
            ),
            variables=variables,
            expires_at=now + self.notification_ttl,
        )
        await self.outbox.add(
            session,
            NOTIFICATIONS,
            _event("collections.notification.requested", account.account_id, request, now, notification_id),
        )
        await self.repo.add_timeline(
            session,
            case_id,
            now,
            "notification_requested",
            SYSTEM,
            {"notification_id": notification_id, "channel": channel, "template": template, **timeline},
        )

    def variables(self, case_id: str, level: Level, account: AccountUpdated, now: datetime) -> dict[str, Any]:
        customer = account.customer
        out = self._base_variables(case_id, account, customer.language if customer else "en")
        out["level"] = level.name
        out["deadline"] = (now.date() + timedelta(days=14)).isoformat()
        return out

    def _base_variables(self, case_id: str, account: AccountUpdated, locale: str) -> dict[str, Any]:
        customer = account.customer
        formatted: dict[tuple[int, str], str] = {}  # an account's only invoice is also its total: format once

        def money(amount_minor: int, currency: str) -> str:
            key = (amount_minor, currency)
            if key not in formatted:
                formatted[key] = format_money(amount_minor, currency, locale)
            return formatted[key]

        totals = [
            {
                "currency": b.currency,
                "amount_minor": b.open_minor,
                "formatted": money(b.open_minor, b.currency),
            }
            for b in account.balances
            if b.open_minor > 0
        ]
        return {
            "customer_name": customer.name if customer else "",
            "invoices": [
                {
                    "number": inv.invoice_number,
                    "currency": inv.currency,
                    "open_minor": inv.open_minor,
                    "open": money(inv.open_minor, inv.currency),
                    "due_date": inv.due_date.isoformat(),
                    "days_past_due": inv.days_past_due,
                }
                for inv in account.open_invoices
            ],
            "totals": totals,
            "total_due": ", ".join(str(t["formatted"]) for t in totals),
            "max_days_past_due": account.max_days_past_due,
            "payment_link": self.payment_link_template.format(account_id=account.account_id, case_id=case_id),
        }

    async def _confirm(
        self,
        session: AsyncSession,
        case_id: str,
        account: AccountUpdated,
        kind: str,
        ref: str,
        template: str,
        extra: dict[str, Any],
        now: datetime,
    ) -> None:
        """A written confirmation (promise, payment plan) or thank-you, on the policy's channels."""
        customer = account.customer
        for channel in self.policy.agreements.channels:
            if customer is None or _unreachable(customer, channel) is not None:
                continue
            await self._send(
                session,
                account,
                customer,
                channel,
                notification_id=f"{case_id}:{kind}:{ref}:{channel}",
                case_id=case_id,
                template=template,
                variables={**self._base_variables(case_id, account, customer.language), "kind": kind, **extra},
                timeline={"kind": kind},
                now=now,
            )

    async def _emit(
        self, session: AsyncSession, type_: str, case_id: str, account_id: str, now: datetime, **fields: Any
    ) -> None:
        data = CaseEvent(case_id=case_id, account_id=account_id, **fields)
        await self.outbox.add(session, EVENTS, _event(type_, account_id, data, now))

    # ------------------------------------------------------------------ reads

    async def get(self, session: AsyncSession, case_id: str) -> dict[str, Any]:
        case = await self.repo.get_case(session, case_id)
        if case is None:
            raise NotFoundError(f"no case {case_id!r}")
        account = await self.repo.account(session, case.account_id)
        view = self._view(case, account.state if account else None)
        view.update(await self.repo.agreements(session, case_id))
        return view

    async def for_account(self, session: AsyncSession, account_id: str) -> dict[str, Any]:
        case = await self.repo.open_case(session, account_id) or await self.repo.latest_case_for_account(
            session, account_id
        )
        if case is None:
            raise NotFoundError(f"no case for account {account_id!r}")
        return await self.get(session, case.case_id)

    async def timeline(self, session: AsyncSession, case_id: str) -> list[dict[str, Any]]:
        if await self.repo.get_case(session, case_id) is None:
            raise NotFoundError(f"no case {case_id!r}")
        return [
            {"id": r.id, "at": r.at, "kind": r.kind, "actor": r.actor, "data": r.data}
            for r in await self.repo.timeline(session, case_id)
        ]

    async def worklist(self, session: AsyncSession, query: WorklistQuery) -> dict[str, Any]:
        after: tuple[Any, str] | None = None
        if query.cursor:
            after = _decode_cursor(query.cursor, query.sort)
        statuses: list[str] = [query.status] if query.status else list(ACTIVE)
        rows = await self.repo.list_cases(
            session,
            statuses=statuses,
            stage=query.stage,
            tier=query.tier,
            assignee=query.assignee,
            currency=query.currency,
            min_amount_minor=query.min_amount_minor,
            sort=query.sort,
            after=after,
            limit=query.limit + 1,
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = [self._view(r, None) for r in rows]
        cursor = None
        if more and rows:
            last = rows[-1]
            cursor = _encode_cursor(
                last.priority if query.sort == "priority" else last.opened_at.isoformat(), last.case_id
            )
        return {"items": items, "next_cursor": cursor}

    async def aging(self, session: AsyncSession) -> dict[str, Any]:
        return {
            "currencies": [
                {
                    "currency": r.currency,
                    "accounts": int(r.accounts),
                    "open_minor": int(r.open_minor),
                    "overdue_minor": int(r.overdue_minor),
                    "buckets": {
                        "current": int(r.current),
                        "d1_30": int(r.d1_30),
                        "d31_60": int(r.d31_60),
                        "d61_90": int(r.d61_90),
                        "d90_plus": int(r.d90_plus),
                    },
                }
                for r in await self.repo.aging(session)
            ]
        }

    async def kpis(self, session: AsyncSession, first: date | None = None, last: date | None = None) -> dict[str, Any]:
        """The collection KPIs over the days ``first`` to ``last`` (inclusive; UTC days; default: the 90
        days ending today). Per currency, never converted: with B the receivables at the close of the day
        before ``first``, S the credit sales (invoices issued) in the period, E and C the total and the
        not-yet-due receivables at the close of ``last``, and N the period's days:
        DSO = E / S x N days; CEI = (B + S - E) / (B + S - C) x 100 (null when a divisor is not positive)."""
        last = last or self.clock.now().astimezone(UTC).date()
        first = first or last - timedelta(days=KPI_DEFAULT_DAYS - 1)
        if first > last:
            raise PermanentError("from is after to")
        days = (last - first).days + 1
        by_stage: dict[str, int] = {}
        by_status: dict[str, int] = {}
        for r in await self.repo.case_counts(session):
            by_status[r.status] = by_status.get(r.status, 0) + int(r.n)
            if r.status not in CLOSED:
                key = r.stage or "none"
                by_stage[key] = by_stage.get(key, 0) + int(r.n)
        period_start, period_end = _midnight(first), _midnight(last + timedelta(days=1))
        promises = await self.repo.promise_counts(session, period_start, period_end)
        settled = promises.get("kept", 0) + promises.get("broken", 0)
        beginning = await self.repo.receivables_at(session, first - timedelta(days=1))
        ending = await self.repo.receivables_at(session, last)
        sales = await self.repo.credit_sales(session, first, last)
        dso: list[dict[str, Any]] = []
        cei: list[dict[str, Any]] = []
        for currency in sorted(set(beginning) | set(ending) | set(sales)):
            b, _ = beginning.get(currency, (0, 0))
            e, c = ending.get(currency, (0, 0))
            s = sales.get(currency, 0)
            dso.append(
                {
                    "currency": currency,
                    "open_minor": e,
                    "credit_sales_minor": s,
                    "days": _ratio(e * days, s, 1),
                }
            )
            cei.append(
                {
                    "currency": currency,
                    "beginning_receivables_minor": b,
                    "credit_sales_minor": s,
                    "ending_receivables_minor": e,
                    "ending_current_minor": c,
                    "collected_minor": b + s - e,
                    "cei": _ratio((b + s - e) * 100, b + s - c, 1),
                }
            )
        return {
            "period": {"from": first, "to": last, "days": days},
            "dso": dso,
            "collection_effectiveness_index": cei,
            "promise_kept_rate": round(promises.get("kept", 0) / settled, 4) if settled else None,
            "promises": promises,
            "recovery_rate": [
                {
                    "currency": r.currency,
                    "owed_at_open_minor": int(r.owed or 0),
                    "recovered_minor": int(r.recovered or 0),
                    "rate": round(int(r.recovered or 0) / int(r.owed), 4) if r.owed else None,
                }
                for r in await self.repo.recovery(session, period_start, period_end)
            ],
            "cases_by_stage": by_stage,
            "cases_by_status": by_status,
        }

    @staticmethod
    def _view(case: Row[Any], state: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case_id": case.case_id,
            "account_id": case.account_id,
            "status": case.status,
            "stage": case.stage,
            "opened_at": case.opened_at,
            "closed_at": case.closed_at,
            "closed_reason": case.closed_reason,
            "next_action_at": case.next_action_at,
            "paused_until": case.paused_until,
            "assignee": case.assignee,
            "credit_hold": case.credit_hold,
            "tier": case.tier,
            "currency": case.currency,
            "overdue_minor": case.overdue_minor,
            "priority": case.priority,
            "version": case.version,
        }
        if state is not None:
            out["open_invoices"] = state.get("open_invoices", [])
            out["balances"] = state.get("balances", [])
            out["risk"] = state.get("risk")
        return out


@dataclass(frozen=True)
class WorklistQuery:
    status: str | None = None
    stage: str | None = None
    tier: str | None = None
    assignee: str | None = None
    currency: str | None = None
    min_amount_minor: int | None = None
    sort: str = "priority"
    cursor: str | None = None
    limit: int = 50


def _ratio(numerator: int, denominator: int, places: int) -> float | None:
    """numerator / denominator rounded half-up to ``places`` decimals, exactly (None when not positive)."""
    if denominator <= 0:
        return None
    quantum = Decimal(1).scaleb(-places)
    return float((Decimal(numerator) / Decimal(denominator)).quantize(quantum, rounding=ROUND_HALF_UP))


def _encode_cursor(key: int | str, case_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([key, case_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        key, case_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if sort == "priority":
            return int(key), str(case_id)
        return datetime.fromisoformat(str(key)), str(case_id)
    except (ValueError, TypeError) as exc:
        raise PermanentError("cursor is not one this API handed out (or the sort changed)") from exc


def _unreachable(customer: Customer | None, channel: str) -> str | None:
    """Why ``customer`` may not be contacted on ``channel`` (no address, or no consent), or None."""
    if customer is None:
        return "no customer record"
    if channel == "email" and not (customer.email and customer.consent.email):
        return "no email address with consent"
    if channel == "sms" and not (customer.phone and customer.consent.sms):
        return "no phone number with SMS consent"
    return None
