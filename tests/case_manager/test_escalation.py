"""Time travel with the injectable clock: a case walks down the whole default ladder, promises
break, installments are missed, payment resolves. Real PostgreSQL (a rolled-back transaction)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.auth import Principal
from arrears_case_manager.cases.actions import CaseActions
from arrears_case_manager.cases.schemas import PauseIn, PlanIn, PromiseIn, ReasonIn
from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.models import accounts
from arrears_shared.clock import FixedClock
from tests.case_manager.helpers import account_state, apply, kinds, make_service, noon, outbox_events

DUE = date(2026, 3, 2)
COLLECTOR = Principal(key_id="k1", scopes=frozenset({"cases:write"}))


def _id() -> str:
    return f"ACC-{uuid.uuid4().hex[:10]}"


async def _sweep_to(service: CaseService, session: AsyncSession, clock: FixedClock, day: date) -> None:
    clock.set(noon(day))
    await service.sweep(session, 1000)


async def _case(service: CaseService, session: AsyncSession, account_id: str) -> dict[str, Any]:
    return await service.for_account(session, account_id)


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_walks_the_whole_default_ladder_day_by_day(session: AsyncSession) -> None:
    acc = _id()
    clock = FixedClock(noon(DUE - timedelta(days=10)))
    service = make_service(clock)
    terms = {"code": "NET30", "late_fee_percent": "2", "annual_interest_percent": "8"}
    state = account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 250_000)], terms=terms)
    await apply(service, session, state)
    assert (await session.execute(select(accounts.c.wake_at).where(accounts.c.account_id == acc))).scalar_one() == (
        noon(DUE - timedelta(days=3)).replace(hour=0)
    )
    stages: dict[int, str | None] = {}
    for offset in range(-10, 75):
        day = DUE + timedelta(days=offset)
        await _sweep_to(service, session, clock, day)
        try:
            stages[offset] = (await _case(service, session, acc))["stage"]
        except Exception:
            stages[offset] = None
    assert stages[-4] is None
    assert stages[-3] == "pre_due"
    assert stages[-1] == "pre_due"
    assert stages[0] == "due"
    assert stages[1] == "overdue_1"
    assert stages[6] == "overdue_1"
    assert stages[7] == "overdue_7"
    assert stages[14] == "overdue_14"
    assert stages[30] == "overdue_30"
    assert stages[60] == "external"
    assert stages[74] == "external"
    case = await _case(service, session, acc)
    assert case["status"] == "escalated_external"
    assert case["credit_hold"] == "placed"
    assert case["next_action_at"] is None
    events = await outbox_events(session, acc)
    notes = [e for e in events if e["type"] == "collections.notification.requested"]
    # One per channel per level, each exactly once: pre_due, due, overdue_1 (email); overdue_7 (email+sms);
    # overdue_14 (email); overdue_30 (email).
    assert [n["data"]["template"] + ":" + n["data"]["channel"] for n in notes] == [
        "reminder_friendly:email",
        "reminder_due:email",
        "overdue_polite:email",
        "overdue_reminder:email",
        "overdue_reminder:sms",
        "overdue_firm:email",
        "notice_of_intent:email",
    ]
    assert len({n["id"] for n in notes}) == len(notes)
    variables = notes[-1]["data"]["variables"]
    assert variables["customer_name"] == "Erika Mustermann"
    assert variables["invoices"][0]["number"] == "N-I1"
    assert variables["total_due"] == "€2,500.00"
    assert variables["payment_link"].startswith("https://pay.example/" + acc)
    fees = [e["data"] for e in events if e["type"] == "collections.late_fee.assessed"]
    # 2% of 2,500.00, and 8% a year for 14 days: 2,500.00 x 0.08 x 14/365 = 7.671... -> 7.67 (half up).
    assert [(f["amount_minor"], f["currency"]) for f in fees] == [(5_000, "EUR"), (767, "EUR")]
    types = _types(events)
    for expected in (
        "collections.case.opened",
        "collections.call_task.created",
        "collections.credit_hold.placed",
        "collections.case.handed_off",
    ):
        assert types.count(expected) == 1, expected
    assert types.count("collections.case.stage_changed") == 7


async def test_interest_accrues_daily_on_a_current_state(session: AsyncSession) -> None:
    acc = _id()
    day14 = DUE + timedelta(days=14)
    clock = FixedClock(noon(day14))
    service = make_service(clock)
    terms = {"code": "X", "annual_interest_percent": "10"}
    await apply(service, session, account_state(acc, today=day14, invoices=[("I1", DUE, 365_000)], terms=terms))
    [fee] = [e["data"] for e in await outbox_events(session, acc) if e["type"] == "collections.late_fee.assessed"]
    assert fee["amount_minor"] == 1_400  # 3,650.00 x 10% x 14/365 = 14.00
    assert Decimal(fee["amount_minor"]) == Decimal(365_000) * Decimal("0.10") * 14 / 365


async def test_after_downtime_enters_the_level_reached_without_replaying(session: AsyncSession) -> None:
    acc = _id()
    clock = FixedClock(noon(DUE + timedelta(days=1)))
    service = make_service(clock)
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 10_000)]))
    assert (await _case(service, session, acc))["stage"] == "overdue_1"
    await _sweep_to(service, session, clock, DUE + timedelta(days=33))  # the service was down for a month
    case = await _case(service, session, acc)
    assert case["stage"] == "overdue_30"
    k = await kinds(session, case["case_id"])
    assert k.count("stage_changed") == 2  # overdue_1, then straight to overdue_30
    templates = [
        e["data"]["template"] for e in await outbox_events(session, acc) if e["type"].endswith("notification.requested")
    ]
    assert templates == ["overdue_polite", "notice_of_intent"]


async def test_a_promise_suspends_escalation_and_a_broken_one_resumes_it(session: AsyncSession) -> None:
    acc = _id()
    clock = FixedClock(noon(DUE + timedelta(days=8)))
    service = make_service(clock)
    actions = CaseActions(service)
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 50_000)]))
    case = await _case(service, session, acc)
    assert case["stage"] == "overdue_7"
    promised_on = DUE + timedelta(days=20)
    status, view = await actions.run(
        session,
        COLLECTOR,
        case["case_id"],
        "promises",
        PromiseIn(currency="EUR", amount_minor=50_000, date=promised_on),
        if_match=None,
        idempotency_key=None,
    )
    assert status == 201
    assert view["status"] == "promised"
    assert view["promises"][0]["status"] == "pending"
    # The customer gets the agreement in writing.
    confirmation = [
        e
        for e in await outbox_events(session, acc)
        if e["data"].get("template") == "payment_plan_confirmation"
        or e["data"].get("template") == "promise_confirmation"
    ]
    assert len(confirmation) == 1
    assert confirmation[0]["data"]["variables"]["promise"]["amount"] == "€500.00"
    # Day 14 passes: no escalation while the promise stands.
    await _sweep_to(service, session, clock, DUE + timedelta(days=15))
    assert (await _case(service, session, acc))["stage"] == "overdue_7"
    # The promised day plus one day's grace passes unpaid, in the customer's timezone: broken.
    await _sweep_to(service, session, clock, promised_on + timedelta(days=1))
    assert (await _case(service, session, acc))["status"] == "promised"
    await _sweep_to(service, session, clock, promised_on + timedelta(days=2))
    case = await _case(service, session, acc)
    assert case["status"] == "open"
    assert case["stage"] == "overdue_14"  # resumes at the level reached (day 22)
    assert case["promises"][0]["status"] == "broken"
    types = _types(await outbox_events(session, acc))
    assert types.count("collections.promise.made") == 1
    assert types.count("collections.promise.broken") == 1


async def test_a_kept_promise_and_full_payment_resolve_lift_the_hold_and_thank(session: AsyncSession) -> None:
    acc = _id()
    clock = FixedClock(noon(DUE + timedelta(days=31)))
    service = make_service(clock)
    actions = CaseActions(service)
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 80_000)]))
    case = await _case(service, session, acc)
    assert case["credit_hold"] == "placed"
    await actions.run(
        session,
        COLLECTOR,
        case["case_id"],
        "promises",
        PromiseIn(currency="EUR", amount_minor=80_000, date=clock.now().date() + timedelta(days=3)),
        if_match=None,
        idempotency_key=None,
    )
    clock.set(noon(DUE + timedelta(days=33)))
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 0)]))
    case = await _case(service, session, acc)
    assert case["status"] == "resolved"
    assert case["credit_hold"] == "lifted"
    assert case["promises"][0]["status"] == "kept"
    events = await outbox_events(session, acc)
    types = _types(events)
    assert types.count("collections.promise.kept") == 1
    assert types.count("collections.credit_hold.lifted") == 1
    assert types.count("collections.case.resolved") == 1
    assert [e["data"]["template"] for e in events if e["type"].endswith("notification.requested")][-1] == "thank_you"


async def test_a_missed_installment_defaults_the_plan_and_resumes_escalation(session: AsyncSession) -> None:
    acc = _id()
    clock = FixedClock(noon(DUE + timedelta(days=8)))
    service = make_service(clock)
    actions = CaseActions(service)
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 90_000)]))
    case = await _case(service, session, acc)
    first, second, third = (DUE + timedelta(days=d) for d in (10, 40, 70))
    plan = PlanIn.model_validate(
        {
            "currency": "EUR",
            "installments": [
                {"due_date": first.isoformat(), "amount_minor": 30_000},
                {"due_date": second.isoformat(), "amount_minor": 30_000},
                {"due_date": third.isoformat(), "amount_minor": 30_000},
            ],
        }
    )
    status, view = await actions.run(
        session, COLLECTOR, case["case_id"], "payment-plans", plan, if_match=None, idempotency_key=None
    )
    assert status == 201
    assert view["status"] == "payment_plan"
    # The first installment is paid on time.
    clock.set(noon(first))
    await apply(service, session, account_state(acc, today=first, invoices=[("I1", DUE, 60_000)]))
    await _sweep_to(service, session, clock, first + timedelta(days=5))
    case = await _case(service, session, acc)
    assert case["status"] == "payment_plan"
    assert [i["status"] for i in case["payment_plans"][0]["installments"]] == ["paid", "pending", "pending"]
    # The second is not: after its day and the grace, the plan defaults and escalation resumes.
    await _sweep_to(service, session, clock, second + timedelta(days=2))
    case = await _case(service, session, acc)
    assert case["status"] == "open"
    assert case["stage"] == "overdue_30"
    assert case["payment_plans"][0]["status"] == "defaulted"
    types = _types(await outbox_events(session, acc))
    assert types.count("collections.payment_plan.created") == 1
    assert types.count("collections.payment_plan.installment_missed") == 1


async def test_pause_until_resumes_by_itself_and_write_off_closes(session: AsyncSession) -> None:
    acc = _id()
    clock = FixedClock(noon(DUE + timedelta(days=2)))
    service = make_service(clock)
    actions = CaseActions(service)
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 10_000)]))
    case = await _case(service, session, acc)
    until = noon(DUE + timedelta(days=20))
    await actions.run(
        session,
        COLLECTOR,
        case["case_id"],
        "pause",
        PauseIn(reason="customer in hospital", until=until),
        if_match=None,
        idempotency_key=None,
    )
    await _sweep_to(service, session, clock, DUE + timedelta(days=15))
    assert (await _case(service, session, acc))["stage"] == "overdue_1"
    await _sweep_to(service, session, clock, DUE + timedelta(days=21))
    case = await _case(service, session, acc)
    assert (case["status"], case["stage"]) == ("open", "overdue_14")
    _status, view = await actions.run(
        session,
        COLLECTOR,
        case["case_id"],
        "write-off",
        ReasonIn(reason="insolvent"),
        if_match=None,
        idempotency_key=None,
    )
    assert view["status"] == "written_off"
    assert view["closed_at"] is not None
    # The same debt does not reopen a case on the next update.
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 10_000)]))
    assert (await _case(service, session, acc))["case_id"] == case["case_id"]
    k = await kinds(session, case["case_id"])
    assert "pause" in k
    assert "resumed" in k
    assert "write_off" in k


async def test_paying_the_oldest_invoice_steps_back_and_never_charges_a_fee_twice(session: AsyncSession) -> None:
    acc = _id()
    second_due = DUE + timedelta(days=10)
    clock = FixedClock(noon(DUE + timedelta(days=14)))
    service = make_service(clock)
    terms = {"code": "X", "late_fee_percent": "1"}
    invoices = [("I1", DUE, 100_000), ("I2", second_due, 40_000)]
    await apply(service, session, account_state(acc, today=DUE + timedelta(days=14), invoices=invoices, terms=terms))
    assert (await _case(service, session, acc))["stage"] == "overdue_14"
    # I1 is paid: the oldest open invoice is now I2 (4 days overdue): back to overdue_1.
    await apply(
        service,
        session,
        account_state(acc, today=clock.now().date(), invoices=[("I2", second_due, 40_000)], terms=terms),
    )
    case = await _case(service, session, acc)
    assert (case["status"], case["stage"]) == ("open", "overdue_1")
    # I2 reaches day 14 itself: overdue_14 fires again for it, but I2's fee (charged already) is not.
    await _sweep_to(service, session, clock, second_due + timedelta(days=14))
    assert (await _case(service, session, acc))["stage"] == "overdue_14"
    events = await outbox_events(session, acc)
    fees = [
        (e["data"]["invoice_ids"], e["data"]["amount_minor"]) for e in events if e["type"].endswith("late_fee.assessed")
    ]
    assert fees == [(["I1"], 1_000), (["I2"], 400)]
    firm = [e["data"]["notification_id"] for e in events if e["data"].get("template") == "overdue_firm"]
    assert len(firm) == len(set(firm)) == 2  # one per debt that reached the level


async def test_a_new_invoice_does_not_make_a_kept_promise_look_broken(session: AsyncSession) -> None:
    acc = _id()
    clock = FixedClock(noon(DUE + timedelta(days=8)))
    service = make_service(clock)
    actions = CaseActions(service)
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 30_000)]))
    case = await _case(service, session, acc)
    promise = PromiseIn(currency="EUR", amount_minor=30_000, date=clock.now().date() + timedelta(days=5))
    await actions.run(session, COLLECTOR, case["case_id"], "promises", promise, if_match=None, idempotency_key=None)
    # A new invoice (not yet due) and the promised payment of I1 arrive: the total open did not fall,
    # but what the promise covered was paid.
    new_invoice = ("I2", clock.now().date() + timedelta(days=30), 45_000)
    await apply(service, session, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 0), new_invoice]))
    case = await _case(service, session, acc)
    assert case["promises"][0]["status"] == "kept"
    assert case["status"] == "open"
    assert case["stage"] is None  # nothing is overdue now: I2's own ladder starts with its pre_due reminder
    await _sweep_to(service, session, clock, new_invoice[1] - timedelta(days=3))
    assert (await _case(service, session, acc))["stage"] == "pre_due"
