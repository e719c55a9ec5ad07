"""The period KPIs (DSO, CEI) from the receivables history the case manager records with each account
state, against figures worked out by hand. Real PostgreSQL (a rolled-back transaction); the accounts
are in currencies and a year no other test uses, so the sums are this test's alone."""

from __future__ import annotations

import itertools
import uuid
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.models import invoices_issued, receivable_snapshots
from arrears_shared.clock import FixedClock
from arrears_shared.errors import PermanentError
from arrears_shared.events.v1 import AccountUpdated
from tests.case_manager.helpers import apply, make_service, noon

_versions = itertools.count(1)
Invoice = tuple[str, date, date, int, int]  # (invoice_id, issue_date, due_date, amount_minor, open_minor)


def _state(account_id: str, day: date, currency: str, invoices: list[Invoice]) -> AccountUpdated:
    """The account on ``day`` with these invoices open (a partly paid one has open < amount)."""
    open_invoices: list[dict[str, Any]] = [
        {
            "invoice_id": f"{account_id}-{inv}",
            "invoice_number": inv,
            "currency": currency,
            "amount_minor": amount,
            "open_minor": open_,
            "issue_date": issued.isoformat(),
            "due_date": due.isoformat(),
            "days_past_due": max((day - due).days, 0),
        }
        for inv, issued, due, amount, open_ in invoices
    ]
    total = sum(i["open_minor"] for i in open_invoices)
    overdue = sum(i["open_minor"] for i in open_invoices if i["days_past_due"] > 0)
    return AccountUpdated.model_validate(
        {
            "account_id": account_id,
            "version": next(_versions),
            "as_of": noon(day).isoformat(),
            "open_invoices": open_invoices,
            "balances": [
                {
                    "currency": currency,
                    "open_minor": total,
                    "overdue_minor": overdue,
                    "buckets": {"current": total - overdue, "d1_30": overdue},
                }
            ]
            if open_invoices
            else [],
            "risk": {"probability": 0.2, "tier": "low", "model_version": "test", "reasons": []},
        }
    )


async def test_dso_and_cei_per_currency_over_a_period(session: AsyncSession) -> None:
    clock = FixedClock(noon(date(2031, 2, 1)))
    service = make_service(clock)
    a, b, c, d = (f"KPI-{uuid.uuid4().hex[:8]}" for _ in range(4))
    a1 = ("A1", date(2031, 2, 20), date(2031, 3, 22), 100_000, 100_000)
    a2 = ("A2", date(2031, 3, 5), date(2031, 4, 4), 50_000, 50_000)
    b1 = ("B1", date(2031, 1, 10), date(2031, 2, 9), 40_000, 40_000)
    b2 = ("B2", date(2031, 3, 15), date(2031, 3, 20), 30_000, 30_000)
    c1 = ("C1", date(2031, 2, 1), date(2031, 3, 3), 20_000, 20_000)
    d1 = ("D1", date(2031, 3, 10), date(2031, 4, 9), 10_000, 10_000)
    states = [
        _state(c, date(2031, 2, 10), "CZK", [c1]),
        _state(a, date(2031, 2, 20), "CZK", [a1]),
        _state(b, date(2031, 2, 25), "CZK", [b1]),
        _state(a, date(2031, 3, 5), "CZK", [a1, a2]),
        _state(a, date(2031, 3, 10), "CZK", [a2]),  # A1 paid
        _state(d, date(2031, 3, 10), "HUF", [d1]),
        _state(d, date(2031, 3, 12), "HUF", [(*d1[:4], 4_000)]),  # 6,000 of D1 paid
        _state(a, date(2031, 3, 12), "CZK", [a2]),  # re-aged, nothing changed: no new history row
        _state(b, date(2031, 3, 15), "CZK", [b1, b2]),
        _state(c, date(2031, 3, 20), "CZK", []),  # C1 paid: CZK left the balances
        _state(b, date(2031, 3, 31), "CZK", [b1, b2]),  # B2 now overdue: not current any more
    ]
    for state in states:
        clock.set(state.as_of)
        await apply(service, session, state)

    kpis = await service.kpis(session, date(2031, 3, 1), date(2031, 3, 31))
    assert kpis["period"] == {"from": date(2031, 3, 1), "to": date(2031, 3, 31), "days": 31}
    cei = {r["currency"]: r for r in kpis["collection_effectiveness_index"]}
    dso = {r["currency"]: r for r in kpis["dso"]}
    # CZK: beginning (close of 28 Feb) A1 100,000 + B1 40,000 + C1 20,000 = 160,000; sales in March
    # A2 50,000 + B2 30,000 = 80,000; ending A2 50,000 + B1 40,000 + B2 30,000 + C 0 = 120,000, of which
    # current (not yet due on 31 Mar) A2 50,000. CEI = (160,000 + 80,000 - 120,000)
    # / (160,000 + 80,000 - 50,000) x 100 = 120,000 / 190,000 x 100 = 63.16 -> 63.2;
    # DSO = 120,000 / 80,000 x 31 = 46.5 days.
    assert cei["CZK"] == {
        "currency": "CZK",
        "beginning_receivables_minor": 160_000,
        "credit_sales_minor": 80_000,
        "ending_receivables_minor": 120_000,
        "ending_current_minor": 50_000,
        "collected_minor": 120_000,
        "cei": 63.2,
    }
    assert dso["CZK"] == {"currency": "CZK", "open_minor": 120_000, "credit_sales_minor": 80_000, "days": 46.5}
    # HUF, never mixed with CZK: nothing at the start, D1 10,000 issued, 4,000 still open and current:
    # CEI = (0 + 10,000 - 4,000) / (0 + 10,000 - 4,000) x 100 = 100.0; DSO = 4,000 / 10,000 x 31 = 12.4.
    assert cei["HUF"]["cei"] == 100.0
    assert cei["HUF"]["collected_minor"] == 6_000
    assert dso["HUF"]["days"] == 12.4

    # February alone: beginning 0 (nothing before 1 Feb in CZK), sales A1 100,000 + C1 20,000
    # (B1 was issued in January), ending 160,000 of which current A1 100,000 + C1 20,000 = 120,000:
    # CEI = (0 + 120,000 - 160,000) / (0 + 120,000 - 120,000): no divisor, so null; DSO = 160,000 /
    # 120,000 x 28 = 37.33 -> 37.3.
    feb = await service.kpis(session, date(2031, 2, 1), date(2031, 2, 28))
    feb_cei = next(r for r in feb["collection_effectiveness_index"] if r["currency"] == "CZK")
    assert feb_cei["cei"] is None
    assert feb_cei["collected_minor"] == -40_000
    assert next(r for r in feb["dso"] if r["currency"] == "CZK")["days"] == 37.3

    # The history holds changes only: A on 20 Feb, 5 Mar and 10 Mar (not the unchanged 12 Mar);
    # C's paid-off currency is a 0 row on 20 Mar; every invoice seen open once.
    rows = await session.execute(
        select(receivable_snapshots.c.day, receivable_snapshots.c.open_minor)
        .where(receivable_snapshots.c.account_id.in_([a, c]))
        .order_by(receivable_snapshots.c.account_id != a, receivable_snapshots.c.day)
    )
    assert [(r.day, r.open_minor) for r in rows] == [
        (date(2031, 2, 20), 100_000),
        (date(2031, 3, 5), 150_000),
        (date(2031, 3, 10), 50_000),
        (date(2031, 2, 10), 20_000),
        (date(2031, 3, 20), 0),
    ]
    issued = await session.execute(
        select(func.count()).select_from(invoices_issued).where(invoices_issued.c.account_id.in_([a, b, c, d]))
    )
    assert issued.scalar_one() == 6


async def test_a_stale_state_records_nothing_and_the_same_day_keeps_its_last_state(session: AsyncSession) -> None:
    clock = FixedClock(noon(date(2031, 5, 1)))
    service = make_service(clock)
    acc = f"KPI-{uuid.uuid4().hex[:8]}"
    first = _state(acc, date(2031, 5, 1), "CZK", [("X1", date(2031, 5, 1), date(2031, 5, 31), 9_000, 9_000)])
    later = _state(acc, date(2031, 5, 1), "CZK", [("X1", date(2031, 5, 1), date(2031, 5, 31), 9_000, 2_000)])
    await apply(service, session, first)
    await apply(service, session, later)
    await apply(service, session, first)  # an older version arriving again: ignored
    rows = await session.execute(
        select(receivable_snapshots.c.open_minor).where(receivable_snapshots.c.account_id == acc)
    )
    assert list(rows.scalars()) == [2_000]


async def test_the_period_defaults_to_the_last_90_days_and_must_be_in_order(session: AsyncSession) -> None:
    service = make_service(FixedClock(noon(date(2031, 7, 15))))
    kpis = await service.kpis(session)
    assert kpis["period"] == {"from": date(2031, 4, 17), "to": date(2031, 7, 15), "days": 90}
    with pytest.raises(PermanentError):
        await service.kpis(session, date(2031, 7, 2), date(2031, 7, 1))


async def test_an_invoice_seen_again_unchanged_is_not_rewritten_and_an_adjusted_one_is(session: AsyncSession) -> None:
    """invoices_issued keeps each invoice's total as last seen: a state that shows it unchanged leaves its
    row alone (no new row version, not even a row lock: xmax unchanged), one with an adjusted total or
    issue date updates it."""
    clock = FixedClock(noon(date(2031, 6, 1)))
    service = make_service(clock)
    acc = f"KPI-{uuid.uuid4().hex[:8]}"
    row = select(
        invoices_issued.c.amount_minor,
        invoices_issued.c.issue_date,
        literal_column("ctid::text").label("ctid"),
        literal_column("xmax::text").label("xmax"),
    ).where(invoices_issued.c.account_id == acc)
    await apply(
        service,
        session,
        _state(acc, date(2031, 6, 1), "CZK", [("Y1", date(2031, 6, 1), date(2031, 7, 1), 9_000, 9_000)]),
    )
    first = (await session.execute(row)).one()
    await apply(
        service,
        session,
        _state(acc, date(2031, 6, 1), "CZK", [("Y1", date(2031, 6, 1), date(2031, 7, 1), 9_000, 4_000)]),
    )
    assert (await session.execute(row)).one() == first
    await apply(
        service,
        session,
        _state(acc, date(2031, 6, 1), "CZK", [("Y1", date(2031, 6, 2), date(2031, 7, 1), 12_000, 4_000)]),
    )
    adjusted = (await session.execute(row)).one()
    assert (adjusted.amount_minor, adjusted.issue_date) == (12_000, date(2031, 6, 2))
    assert adjusted.ctid != first.ctid
