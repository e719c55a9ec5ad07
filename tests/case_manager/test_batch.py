"""The set-based paths give what the per-event paths give: the same account updates applied one event at a
time (``on_account_updated``) and as one consumer batch (``apply_updates``), and the same due timers fired
one account at a time (lock, then ``evaluate``) and as one sweep batch (``sweep``), leave the same cases,
timelines, agreements, timers and outbox events. Real PostgreSQL (a rolled-back transaction)."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from arrears_case_manager.auth import Principal
from arrears_case_manager.cases.actions import CaseActions
from arrears_case_manager.cases.batch import BatchRepository
from arrears_case_manager.cases.repository import CaseRepository
from arrears_case_manager.cases.schemas import PlanIn, PromiseIn
from arrears_case_manager.cases.service import SWEEP_RETRY_AFTER, CaseService
from arrears_case_manager.models import (
    accounts,
    cases,
    invoices_issued,
    outbox,
    payment_plans,
    promises,
    receivable_snapshots,
    timeline,
)
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_sessionmaker
from arrears_shared.events.v1 import AccountUpdated
from tests.case_manager.helpers import account_state, make_service, noon

DUE = date(2026, 3, 2)
COLLECTOR = Principal(key_id="k1", scopes=frozenset({"cases:write"}))
TERMS = {"code": "NET30", "late_fee_percent": "2", "annual_interest_percent": "8"}


def _as(prefix: str, update: AccountUpdated, other: str) -> AccountUpdated:
    """``update`` for the same account under the other prefix (every id in it renamed)."""
    return AccountUpdated.model_validate_json(update.model_dump_json().replace(prefix, other))


async def _snapshot(session: AsyncSession, prefix: str) -> str:
    """Everything the case manager keeps about the prefix's accounts, as JSON with every generated id
    (case, promise, plan, event ids other than notifications') replaced by its order of appearance."""
    ids = list(
        (
            await session.execute(
                select(accounts.c.account_id).where(accounts.c.account_id.like(prefix + "%")).order_by("account_id")
            )
        ).scalars()
    )
    out: list[dict[str, Any]] = []
    renames: dict[str, str] = {}
    for account_id in ids:
        acc = (await session.execute(select(accounts).where(accounts.c.account_id == account_id))).one()
        case_rows = (await session.execute(select(cases).where(cases.c.account_id == account_id))).all()
        lines = []
        for case in case_rows:
            rows = await session.execute(
                select(timeline).where(timeline.c.case_id == case.case_id).order_by(timeline.c.id)
            )
            lines.append([dict(r._mapping) for r in rows])
        # Cases in the order they were opened (two may open at the same instant): by first timeline row.
        order = sorted(range(len(case_rows)), key=lambda i: lines[i][0]["id"] if lines[i] else 0)
        account_cases = []
        for i in order:
            case = case_rows[i]
            renames.setdefault(case.case_id, f"<case {len(renames)}>")
            ps = (await session.execute(select(promises).where(promises.c.case_id == case.case_id))).all()
            pl = (await session.execute(select(payment_plans).where(payment_plans.c.case_id == case.case_id))).all()
            for r in ps:
                renames.setdefault(r.promise_id, f"<promise {len(renames)}>")
            for r in pl:
                renames.setdefault(r.plan_id, f"<plan {len(renames)}>")
            account_cases.append(
                {
                    "case": dict(case._mapping),
                    "timeline": [{k: v for k, v in t.items() if k != "id"} for t in lines[i]],
                    "promises": [dict(r._mapping) for r in ps],
                    "plans": [dict(r._mapping) for r in pl],
                }
            )
        events = []
        for payload in (
            await session.execute(select(outbox.c.payload).where(outbox.c.key == account_id).order_by(outbox.c.id))
        ).scalars():
            event = orjson.loads(payload)
            if event["type"] != "collections.notification.requested":
                event.pop("id")  # random for every other event
            events.append(event)
        history = {
            "snapshots": [
                dict(r._mapping)
                for r in await session.execute(
                    select(receivable_snapshots)
                    .where(receivable_snapshots.c.account_id == account_id)
                    .order_by(receivable_snapshots.c.currency, receivable_snapshots.c.day)
                )
            ],
            "invoices": [
                dict(r._mapping)
                for r in await session.execute(
                    select(invoices_issued)
                    .where(invoices_issued.c.account_id == account_id)
                    .order_by(invoices_issued.c.invoice_id)
                )
            ],
        }
        out.append(
            {
                "receivables": history,
                "account": dict(acc._mapping),
                "cases": account_cases,
                "outbox": events,
            }
        )
    text = json.dumps(out, default=str, sort_keys=True, indent=1)
    for old, new in renames.items():
        text = text.replace(old, new)
    return text.replace(prefix, "<p>")


def _pre_states(p: str, today: date) -> list[AccountUpdated]:
    return [
        account_state(p + acc, today=today, invoices=invoices)
        for acc, invoices in (
            ("hold", [("I1", DUE - timedelta(days=30), 50_000)]),
            ("promise", [("I1", DUE, 80_000)]),
            ("plan", [("I1", DUE, 90_000)]),
            ("open", [("I1", DUE, 10_000)]),
            ("stale", [("I1", DUE, 10_000)]),
        )
    ]


async def _pre(service: CaseService, session: AsyncSession, p: str, today: date, states: list[AccountUpdated]) -> None:
    """Cases in several states before the batch (built one event at a time, the same for both prefixes)."""
    actions = CaseActions(service)
    for state in states:
        await service.on_account_updated(session, None, state)
    promise_case = await service.for_account(session, p + "promise")
    await actions.run(
        session,
        COLLECTOR,
        promise_case["case_id"],
        "promises",
        PromiseIn(currency="EUR", amount_minor=80_000, date=today + timedelta(days=3)),
        if_match=None,
        idempotency_key=None,
    )
    plan_case = await service.for_account(session, p + "plan")
    plan = PlanIn.model_validate(
        {
            "currency": "EUR",
            "installments": [
                {"due_date": (DUE + timedelta(days=d)).isoformat(), "amount_minor": 30_000} for d in (10, 40, 70)
            ],
        }
    )
    await actions.run(
        session, COLLECTOR, plan_case["case_id"], "payment-plans", plan, if_match=None, idempotency_key=None
    )


def _batch(p: str, today: date) -> list[AccountUpdated]:
    """One consumer batch: new accounts, payments, a payment then new debt, out-of-order and repeated events."""
    later = DUE + timedelta(days=5)
    stale_newer = account_state(p + "stale", today=today, invoices=[("I1", DUE, 9_000)])
    stale_older = account_state(p + "stale", today=today, invoices=[("I1", DUE, 9_500)])
    stale_newer, stale_older = (
        stale_newer.model_copy(update={"version": stale_older.version}),
        stale_older.model_copy(update={"version": stale_newer.version}),
    )
    return [
        account_state(p + "new", today=today, invoices=[("I1", DUE, 20_000)], terms=TERMS),
        account_state(p + "nomail", today=today, invoices=[("I1", DUE, 20_000)], email=False, sms=False),
        account_state(p + "future", today=today, invoices=[("I1", today + timedelta(days=10), 5_000)]),
        account_state(p + "hold", today=today, invoices=[("I1", DUE - timedelta(days=30), 0)]),
        account_state(p + "promise", today=today, invoices=[("I2", today + timedelta(days=20), 5_000)]),
        account_state(p + "plan", today=today, invoices=[("I1", DUE, 60_000)]),
        account_state(p + "open", today=today, invoices=[("I1", DUE, 8_000)]),
        stale_older,  # arrives first but is the newer version
        account_state(p + "open", today=today, invoices=[("I1", DUE, 0)]),  # paid: the case resolves
        stale_newer,  # older than what is applied: skipped
        account_state(p + "open", today=today, invoices=[("I2", later, 7_000)]),  # new debt: a new case
        account_state(p + "new", today=today, invoices=[("I1", DUE, 15_000)], terms=TERMS),
        stale_older,  # a repeat: skipped
    ]


async def test_a_batch_of_updates_and_a_sweep_give_what_one_at_a_time_gives(session: AsyncSession) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    a, b = f"A{tag}-", f"B{tag}-"
    clock = FixedClock(noon(DUE + timedelta(days=8)))
    service = make_service(clock)
    states = _pre_states(a, clock.now().date())
    await _pre(service, session, a, clock.now().date(), states)
    await _pre(service, session, b, clock.now().date(), [_as(a, s, b) for s in states])
    assert await _snapshot(session, a) == await _snapshot(session, b)

    clock.set(noon(DUE + timedelta(days=15)))
    updates = _batch(a, clock.now().date())
    for update in updates:
        await service.on_account_updated(session, None, update)
    await service.apply_updates(session, [(None, _as(a, u, b)) for u in updates])
    after_updates = await _snapshot(session, a)
    assert after_updates == await _snapshot(session, b)
    # The batch did what the scenario is about (so the comparison above compares something).
    assert after_updates.count('"collections.case.resolved"') == 2  # "hold" paid, "open" paid
    assert after_updates.count('"collections.promise.kept"') == 1
    assert after_updates.count('"installment_paid"') == 1
    assert after_updates.count('"late_fee_assessed"') >= 1
    assert after_updates.count('"notification_skipped"') >= 1
    assert after_updates.count('"kind": "case_opened"') == 8  # 5 before; new, nomail, and open's second
    assert after_updates.count('"invoice_id": "I2"') >= 2  # the KPIs' history: invoices issued in the batch

    # Time passes: the due timers fire, per account for one prefix and in one sweep for the other.
    clock.set(noon(DUE + timedelta(days=62)))
    now = clock.now()
    due = (
        await session.execute(
            select(accounts.c.account_id)
            .where(accounts.c.wake_at <= now, accounts.c.account_id.like(a + "%"))
            .order_by(accounts.c.wake_at)
        )
    ).scalars()
    for account_id in list(due):
        await service.repo.lock_account(session, account_id)
        await service.evaluate(session, account_id, now)
    fired = await service.sweep(session, 1000)
    assert fired >= 5
    after_sweep = await _snapshot(session, a)
    assert after_sweep == await _snapshot(session, b)
    assert after_sweep.count('"collections.case.handed_off"') >= 1
    assert after_sweep.count('"collections.payment_plan.installment_missed"') == 1


async def test_a_sweep_leaves_an_account_locked_elsewhere_for_later(engine: AsyncEngine) -> None:
    """An account whose advisory lock another transaction holds (an update or a command on it) is not
    fired and not waited for: it stays due, and the next sweep fires it."""
    acc = f"L{uuid.uuid4().hex[:10].upper()}"
    clock = FixedClock(noon(DUE - timedelta(days=10)))
    service = make_service(clock)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s, s.begin():
        await service.on_account_updated(
            s, None, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 1)])
        )
    clock.set(noon(DUE + timedelta(days=2)))
    try:
        async with sessionmaker() as holder, holder.begin():
            await service.repo.lock_account(holder, acc)
            async with sessionmaker() as s, s.begin():
                await service.sweep(s, 1000)
                wake = (await s.execute(select(accounts.c.wake_at).where(accounts.c.account_id == acc))).scalar_one()
                assert wake is not None and wake <= clock.now(), "still due"
                assert await service.repo.open_case(s, acc) is None
        async with sessionmaker() as s, s.begin():
            await service.sweep(s, 1000)
            case = await service.repo.open_case(s, acc)
            assert case is not None and case.stage == "overdue_1"
    finally:
        async with sessionmaker() as s, s.begin():
            case_ids = select(cases.c.case_id).where(cases.c.account_id == acc)
            await s.execute(delete(timeline).where(timeline.c.case_id.in_(case_ids)))
            await s.execute(delete(cases).where(cases.c.account_id == acc))
            await s.execute(delete(outbox).where(outbox.c.key == acc))
            await s.execute(delete(accounts).where(accounts.c.account_id == acc))


async def test_one_account_that_cannot_be_evaluated_does_not_hold_the_other_timers_back(engine: AsyncEngine) -> None:
    """A sweep whose batch fails on one account fires the others one by one and moves the failing
    account's timer on by SWEEP_RETRY_AFTER (before, every sweep claimed it first and failed)."""
    good, bad = (f"{p}{uuid.uuid4().hex[:10].upper()}" for p in ("G", "B"))
    clock = FixedClock(noon(DUE - timedelta(days=10)))
    service = make_service(clock)
    sessionmaker = make_sessionmaker(engine)
    try:
        async with sessionmaker() as s, s.begin():
            for acc in (good, bad):
                await service.on_account_updated(
                    s, None, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 1)])
                )
            # A stored state that no longer validates (say, written by an older release).
            await s.execute(
                accounts.update().where(accounts.c.account_id == bad).values(state={"account_id": bad, "broken": True})
            )
        clock.set(noon(DUE + timedelta(days=2)))
        async with sessionmaker() as s, s.begin():
            claimed, fired = await service.sweep_batch(s, 1000)
            assert fired == claimed - 1
        async with sessionmaker() as s:
            case = await service.repo.open_case(s, good)
            assert case is not None and case.stage == "overdue_1"
            assert await service.repo.open_case(s, bad) is None
            wake = (await s.execute(select(accounts.c.wake_at).where(accounts.c.account_id == bad))).scalar_one()
            assert wake == clock.now() + SWEEP_RETRY_AFTER
    finally:
        async with sessionmaker() as s, s.begin():
            for acc in (good, bad):
                case_ids = select(cases.c.case_id).where(cases.c.account_id == acc)
                await s.execute(delete(timeline).where(timeline.c.case_id.in_(case_ids)))
                await s.execute(delete(cases).where(cases.c.account_id == acc))
                await s.execute(delete(outbox).where(outbox.c.key == acc))
                await s.execute(delete(accounts).where(accounts.c.account_id == acc))


async def test_a_batch_writes_only_the_columns_its_evaluations_set(session: AsyncSession) -> None:
    """The batch's case update sends only the columns some evaluation in it set (and the version): a
    column no case of the batch changed keeps its stored value, one changed on any case is written for
    every changed case (from memory, where the unchanged ones still hold the loaded value)."""
    tag = uuid.uuid4().hex[:8].upper()
    first, second = f"C{tag}-1", f"C{tag}-2"
    clock = FixedClock(noon(DUE + timedelta(days=8)))
    service = make_service(clock)
    for acc in (first, second):
        await service.on_account_updated(
            session, None, account_state(acc, today=clock.now().date(), invoices=[("I1", DUE, 20_000)])
        )

    async def by_account() -> dict[str, Any]:
        found = await session.execute(select(cases).where(cases.c.account_id.in_([first, second])))
        return {r.account_id: r for r in found.all()}

    before = await by_account()
    repo = BatchRepository(CaseRepository())
    await repo.load(session, [first, second])
    await repo.update_case(session, before[first].case_id, overdue_minor=1)
    await repo.update_case(session, before[second].case_id, overdue_minor=2, stage="overdue_14")
    await repo.flush(session)
    after = await by_account()
    assert (after[first].overdue_minor, after[first].stage) == (1, before[first].stage)
    assert (after[second].overdue_minor, after[second].stage) == (2, "overdue_14")
    for acc in (first, second):
        assert after[acc].version == before[acc].version + 1
        unchanged = {"overdue_minor", "stage", "version"}
        assert {k: v for k, v in after[acc]._mapping.items() if k not in unchanged} == {
            k: v for k, v in before[acc]._mapping.items() if k not in unchanged
        }


async def test_an_evaluation_that_changes_nothing_writes_no_case_row(session: AsyncSession) -> None:
    """A newer account state that leaves the case's timer and worklist columns as they are stored (a
    re-age of the same amounts) is applied, but writes no new version of the case's row and keeps its
    version (the ETag), one event at a time and in a batch; a state that moves the amount writes."""
    tag = uuid.uuid4().hex[:8].upper()
    clock = FixedClock(noon(DUE + timedelta(days=8)))
    service = make_service(clock)
    row = select(cases.c.version, cases.c.overdue_minor, literal_column("ctid::text").label("ctid"))
    for acc, batched in ((f"N{tag}-1", False), (f"N{tag}-2", True)):

        async def apply(state: AccountUpdated, batched: bool = batched) -> None:
            if batched:
                await service.apply_updates(session, [(None, state)])
            else:
                await service.on_account_updated(session, None, state)

        today = clock.now().date()
        await apply(account_state(acc, today=today, invoices=[("I1", DUE, 20_000)]))
        before = (await session.execute(row.where(cases.c.account_id == acc))).one()
        same = account_state(acc, today=today, invoices=[("I1", DUE, 20_000)])
        await apply(same)
        applied = select(accounts.c.version).where(accounts.c.account_id == acc)
        assert (await session.execute(applied)).scalar_one() == same.version
        assert (await session.execute(row.where(cases.c.account_id == acc))).one() == before
        await apply(account_state(acc, today=today, invoices=[("I1", DUE, 15_000)]))
        after = (await session.execute(row.where(cases.c.account_id == acc))).one()
        assert (after.version, after.overdue_minor) == (before.version + 1, 15_000)
        assert after.ctid != before.ctid
