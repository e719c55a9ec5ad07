"""The ledger's state is a function of the set of events, not their order (hypothesis), and
allocations, reversals, credit notes and over-payments are exact."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from arrears_scoring.ledger.compute import compute
from arrears_scoring.ledger.documents import DocRow, from_rows, ledger_rows, wins
from arrears_shared.events.v1 import (
    Allocation,
    CreditNoteIssued,
    InvoiceAdjusted,
    InvoiceCancelled,
    InvoiceIssued,
    PaymentReceived,
    PaymentReversed,
)

ACC = "acc-1"
AS_OF = date(2026, 6, 30)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

Event = tuple[str, datetime, BaseModel]


def fold(events: list[Event]) -> Any:
    """Apply events in the given order with the same keep/replace rules as the database."""
    store: dict[tuple[str, str], tuple[DocRow, str]] = {}
    for event_id, at, data in events:
        for row in ledger_rows(event_id, at, data):
            key = (row.kind, row.doc_id)
            old = store.get(key)
            if wins(row, event_id, old[0] if old else None, old[1] if old else ""):
                store[key] = (row, event_id)
    _, docs = from_rows((r.kind, r.doc_id, r.ref_id, r.data, r.at) for r, _ in store.values())
    return compute(docs, AS_OF)


def invoice(i: int, amount: int, due_offset: int, currency: str = "EUR") -> InvoiceIssued:
    issue = date(2026, 1, 1) + timedelta(days=due_offset)
    return InvoiceIssued(
        invoice_id=f"inv-{i}",
        invoice_number=f"N{i:03d}",
        account_id=ACC,
        issue_date=issue,
        due_date=issue + timedelta(days=30),
        currency=currency,
        amount_minor=amount,
    )


@st.composite
def account_events(draw: st.DrawFn) -> list[Event]:
    n_inv = draw(st.integers(1, 5))
    events: list[Event] = []
    seq = 0

    def add(data: BaseModel) -> None:
        nonlocal seq
        seq += 1
        events.append((f"e{seq}", T0 + timedelta(hours=seq), data))

    for i in range(n_inv):
        currency = draw(st.sampled_from(["EUR", "EUR", "JPY"]))
        add(invoice(i, draw(st.integers(0, 50_000)), draw(st.integers(0, 120)), currency))
        if draw(st.booleans()):
            add(
                InvoiceAdjusted(
                    invoice_id=f"inv-{i}", account_id=ACC, amount_minor=draw(st.integers(0, 60_000)), reason="r"
                )
            )
        if draw(st.integers(0, 5)) == 0:
            add(InvoiceCancelled(invoice_id=f"inv-{i}", account_id=ACC, reason="r"))
    for c in range(draw(st.integers(0, 2))):
        add(
            CreditNoteIssued(
                credit_note_id=f"cn-{c}",
                account_id=ACC,
                currency="EUR",
                amount_minor=draw(st.integers(1, 20_000)),
                invoice_id=draw(st.sampled_from([None, *[f"inv-{i}" for i in range(n_inv)]])),
            )
        )
    for p in range(draw(st.integers(0, 4))):
        currency = draw(st.sampled_from(["EUR", "JPY"]))
        amount = draw(st.integers(1, 60_000))
        target = draw(st.integers(0, n_inv - 1))
        allocations = None
        if draw(st.booleans()):
            allocations = [Allocation(invoice_id=f"inv-{target}", amount_minor=draw(st.integers(1, amount)))]
        reference = draw(st.sampled_from([None, f"N{target:03d}", "misc"]))
        add(
            PaymentReceived(
                payment_id=f"pay-{p}",
                account_id=ACC,
                currency=currency,
                amount_minor=amount,
                received_at=T0 + timedelta(days=draw(st.integers(0, 150))),
                reference=reference,
                allocations=allocations,
            )
        )
        if draw(st.integers(0, 3)) == 0:
            add(PaymentReversed(payment_id=f"pay-{p}", account_id=ACC, reason="NSF"))
    return events


def summary(state: Any) -> Any:
    return (state.open_invoices, state.balances, sorted(state.allocations, key=repr), state.credit, state.settled)


@settings(max_examples=200, deadline=None)
@given(events=account_events(), data=st.data())
def test_any_arrival_order_converges_to_the_in_order_state(events: list[Event], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(events))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(events), max_size=3))  # redelivery
    assert summary(fold(duplicated)) == summary(fold(events))


@settings(max_examples=200, deadline=None)
@given(events=account_events())
def test_money_is_conserved_per_currency(events: list[Event]) -> None:
    state = fold(events)
    for b in state.balances:
        assert b.open_minor >= 0
        assert b.credit_minor >= 0
        assert b.open_minor == sum(getattr(b.buckets, k) for k in ("current", "d1_30", "d31_60", "d61_90", "d90_plus"))
    # every allocation line is positive and no invoice is allocated more than its amount
    per_invoice: dict[str, int] = {}
    for line in state.allocations:
        assert line.amount_minor > 0
        per_invoice[line.invoice_id] = per_invoice.get(line.invoice_id, 0) + line.amount_minor
    for inv in state.open_invoices:
        assert per_invoice.get(inv.invoice_id, 0) + inv.open_minor == inv.amount_minor


def ev(i: int, data: BaseModel, hours: int | None = None) -> Event:
    return (f"e{i}", T0 + timedelta(hours=hours if hours is not None else i), data)


def pay(pid: str, amount: int, day: int, **kw: Any) -> PaymentReceived:
    return PaymentReceived(
        payment_id=pid, account_id=ACC, currency="EUR", amount_minor=amount, received_at=T0 + timedelta(days=day), **kw
    )


def test_allocation_order_explicit_then_reference_then_oldest_due() -> None:
    a, b, c = invoice(1, 1000, 0), invoice(2, 1000, 10), invoice(3, 1000, 20)
    p = pay("p1", 2500, 60, reference="for N003", allocations=[Allocation(invoice_id="inv-2", amount_minor=400)])
    state = fold([ev(1, a), ev(2, b), ev(3, c), ev(4, p)])
    assert [(x.invoice_id, x.amount_minor) for x in state.allocations] == [
        ("inv-2", 400),
        ("inv-3", 1000),
        ("inv-1", 1000),
        ("inv-2", 100),
    ]
    assert {i.invoice_id: i.open_minor for i in state.open_invoices} == {"inv-2": 500}


def test_overpayment_is_kept_as_credit_and_currencies_stay_apart() -> None:
    state = fold([ev(1, invoice(1, 1000, 0)), ev(2, invoice(2, 500, 0, "JPY")), ev(3, pay("p1", 1500, 40))])
    eur = next(b for b in state.balances if b.currency == "EUR")
    jpy = next(b for b in state.balances if b.currency == "JPY")
    assert (eur.open_minor, eur.credit_minor) == (0, 500)
    assert (jpy.open_minor, jpy.credit_minor) == (500, 0)


def test_reversal_reopens_exactly_what_its_payment_closed() -> None:
    a, b = invoice(1, 1000, 0), invoice(2, 1000, 10)
    p1 = pay("p1", 1000, 40)  # closes inv-1 (oldest)
    p2 = pay("p2", 1000, 50)  # closes inv-2
    rev = PaymentReversed(payment_id="p1", account_id=ACC, reason="NSF")
    base = [ev(1, a), ev(2, b), ev(3, p1), ev(4, p2)]
    reversal_at = T0 + timedelta(days=60)
    state = fold([*base, ("e5", reversal_at, rev)])
    assert [(i.invoice_id, i.open_minor) for i in state.open_invoices] == [("inv-1", 1000)]
    assert state.settled["inv-2"] == date(2026, 2, 20)
    # a reversal that arrives before its payment converges to the same
    assert summary(fold([("e5", reversal_at, rev), *reversed(base)])) == summary(state)


def test_credit_note_naming_an_invoice_goes_to_it_and_adjustment_below_paid_leaves_credit() -> None:
    a, b = invoice(1, 1000, 0), invoice(2, 1000, 10)
    cn = CreditNoteIssued(credit_note_id="c1", account_id=ACC, currency="EUR", amount_minor=300, invoice_id="inv-2")
    state = fold([ev(1, a), ev(2, b), ev(3, cn)])
    assert {i.invoice_id: i.open_minor for i in state.open_invoices} == {"inv-1": 1000, "inv-2": 700}
    adj = InvoiceAdjusted(invoice_id="inv-1", account_id=ACC, amount_minor=200, reason="price")
    state = fold([ev(1, a), ev(2, b), ev(4, pay("p1", 1000, 40)), ev(5, adj)])
    eur = state.balances[0]
    assert {i.invoice_id: i.open_minor for i in state.open_invoices} == {"inv-2": 200}
    assert eur.credit_minor == 0
    assert eur.open_minor == 200


def test_aging_buckets_and_dso() -> None:
    # issued 2026-01-01 + offset, due 30 days later; as of 2026-06-30 (day 180)
    invs = [invoice(i, 100 * (i + 1), off) for i, off in enumerate([150, 130, 100, 70, 10])]
    state = fold([ev(i, x) for i, x in enumerate(invs)])
    b = state.balances[0].buckets
    dpd = sorted(i.days_past_due for i in state.open_invoices)
    assert dpd == [0, 20, 50, 80, 140]
    assert (b.current, b.d1_30, b.d31_60, b.d61_90, b.d90_plus) == (100, 200, 300, 400, 500)
    # sales in the last 90 days: invoices issued after 2026-04-01 (offsets 100, 130, 150) = 300+200+100
    assert state.balances[0].dso_days == round(1500 * 90 / 600, 1)
