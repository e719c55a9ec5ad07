"""The account's receivables, computed from its documents alone.

The state is a pure function of the *set* of documents (invoices, adjustments, cancellations,
credit notes, payments, reversals), never of the order they arrived in, so events that arrive
out of order converge to the same state as in order. Allocation order:
1. credit notes that name an invoice, to that invoice;
2. each payment's explicit allocations;
3. invoices the payment's remittance reference names (by invoice number), oldest due first;
4. everything else oldest due date first (then issue date, then invoice id).
Credit notes without an invoice come before payments; payments apply by received time, then id.
What cannot be applied is a credit balance in its currency: never lost, never converted.
A reversal takes effect at its own time (never before its payment): it removes exactly the
allocation lines its payment made and the credit it left, so exactly what that payment had
closed re-opens, while payments received before the reversal keep their allocations.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

from arrears_shared.events.v1 import (
    Balance,
    Buckets,
    CreditNoteIssued,
    InvoiceIssued,
    OpenInvoice,
    PaymentReceived,
)


@dataclass(frozen=True)
class Adjustment:
    invoice_id: str
    amount_minor: int
    at: datetime
    event_id: str


@dataclass
class Documents:
    invoices: dict[str, InvoiceIssued] = field(default_factory=dict)
    adjustments: list[Adjustment] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    credit_notes: dict[str, CreditNoteIssued] = field(default_factory=dict)
    payments: dict[str, PaymentReceived] = field(default_factory=dict)
    reversed: dict[str, datetime] = field(default_factory=dict)  # payment_id -> time of the reversal
    broken_promises: set[str] = field(default_factory=set)
    promises: set[str] = field(default_factory=set)
    disputed: set[str] = field(default_factory=set)  # invoices with an open dispute
    ever_disputed: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class AllocationLine:
    source: str  # "payment:<id>" or "credit_note:<id>"
    invoice_id: str
    amount_minor: int


@dataclass
class LedgerState:
    open_invoices: list[OpenInvoice]
    balances: list[Balance]
    allocations: list[AllocationLine]
    credit: dict[str, int]
    settled: dict[str, date | None]  # invoice_id -> date fully paid (None: not paid)
    oldest_due_date: date | None
    max_days_past_due: int
    dso_days: dict[str, float | None] = field(default_factory=dict)


DSO_WINDOW_DAYS = 90


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def _named_invoices(reference: str | None, by_number: dict[str, list[str]]) -> list[str]:
    if not reference:
        return []
    named: list[str] = []
    tokens = {t.strip("._/-").upper() for t in _TOKEN.findall(reference)}
    for number, ids in by_number.items():
        if number.upper() in tokens:
            named.extend(ids)
    return named


def _bucket(days: int) -> str:
    if days <= 0:
        return "current"
    if days <= 30:
        return "d1_30"
    if days <= 60:
        return "d31_60"
    if days <= 90:
        return "d61_90"
    return "d90_plus"


def compute(docs: Documents, as_of: date) -> LedgerState:
    amounts: dict[str, int] = {}
    latest: dict[str, Adjustment] = {}
    for adj in docs.adjustments:
        cur = latest.get(adj.invoice_id)
        if cur is None or (adj.at, adj.event_id) > (cur.at, cur.event_id):
            latest[adj.invoice_id] = adj
    live = {i: inv for i, inv in docs.invoices.items() if i not in docs.cancelled}
    for inv_id, inv in live.items():
        amounts[inv_id] = latest[inv_id].amount_minor if inv_id in latest else inv.amount_minor
    open_: dict[str, int] = dict(amounts)
    order = sorted(live.values(), key=lambda i: (i.due_date, i.issue_date, i.invoice_id))
    by_number: dict[str, list[str]] = defaultdict(list)
    for inv in order:
        by_number[inv.invoice_number].append(inv.invoice_id)
    allocations: list[AllocationLine] = []
    credit: dict[str, int] = defaultdict(int)
    paid_on: dict[str, date] = {}

    def apply(source: str, currency: str, amount: int, targets: list[str], when: date | None) -> int:
        for inv_id in targets:
            if amount <= 0:
                break
            inv = live.get(inv_id)
            if inv is None or inv.currency != currency or open_[inv_id] <= 0:
                continue
            take = min(amount, open_[inv_id])
            open_[inv_id] -= take
            amount -= take
            allocations.append(AllocationLine(source, inv_id, take))
            if open_[inv_id] == 0 and when is not None:
                paid_on[inv_id] = when
        return amount

    oldest_first = [i.invoice_id for i in order]
    notes = sorted(
        docs.credit_notes.values(), key=lambda c: (c.invoice_id is None, c.issue_date or date.min, c.credit_note_id)
    )
    for note in notes:
        src = f"credit_note:{note.credit_note_id}"
        rest = note.amount_minor
        if note.invoice_id:
            rest = apply(src, note.currency, rest, [note.invoice_id], note.issue_date)
        rest = apply(src, note.currency, rest, oldest_first, note.issue_date)
        credit[note.currency] += rest
    # Payments and reversals on one timeline; a reversal sorts after its payment.
    timeline: list[tuple[datetime, int, str]] = []
    for pay in docs.payments.values():
        timeline.append((pay.received_at, 0, pay.payment_id))
        reversed_at = docs.reversed.get(pay.payment_id)
        if reversed_at is not None:
            timeline.append((max(reversed_at, pay.received_at), 1, pay.payment_id))
    timeline.sort()
    made: dict[str, tuple[int, int]] = {}  # payment_id -> (first allocation line index, credit left)
    undone: set[int] = set()
    for _, op, payment_id in timeline:
        pay = docs.payments[payment_id]
        if op == 1:
            first, left = made.pop(payment_id)
            for index in range(first, len(allocations)):
                line = allocations[index]
                if line.source == f"payment:{payment_id}" and index not in undone:
                    undone.add(index)
                    open_[line.invoice_id] += line.amount_minor
                    paid_on.pop(line.invoice_id, None)
            credit[pay.currency] -= left
            continue
        src = f"payment:{pay.payment_id}"
        first = len(allocations)
        rest = pay.amount_minor
        day = pay.received_at.date()
        for alloc in pay.allocations or []:
            take = min(alloc.amount_minor, rest)
            left = apply(src, pay.currency, take, [alloc.invoice_id], day)
            rest -= take - left
        rest = apply(src, pay.currency, rest, _named_invoices(pay.reference, by_number), day)
        rest = apply(src, pay.currency, rest, oldest_first, day)
        credit[pay.currency] += rest
        made[payment_id] = (first, rest)
    allocations = [line for index, line in enumerate(allocations) if index not in undone]

    open_invoices: list[OpenInvoice] = []
    per_currency: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    oldest: date | None = None
    max_dpd = 0
    for inv in order:
        remaining = open_[inv.invoice_id]
        if remaining <= 0:
            continue
        dpd = (as_of - inv.due_date).days
        open_invoices.append(
            OpenInvoice(
                invoice_id=inv.invoice_id,
                invoice_number=inv.invoice_number,
                currency=inv.currency,
                amount_minor=amounts[inv.invoice_id],
                open_minor=remaining,
                issue_date=inv.issue_date,
                due_date=inv.due_date,
                days_past_due=max(dpd, 0),
                disputed=inv.invoice_id in docs.disputed,
                terms=inv.terms,  # the case manager charges late fees and interest from these
            )
        )
        bucket = per_currency[inv.currency]
        bucket[_bucket(dpd)] += remaining
        bucket["open"] += remaining
        if dpd > 0:
            bucket["overdue"] += remaining
        if oldest is None or inv.due_date < oldest:
            oldest = inv.due_date
        max_dpd = max(max_dpd, dpd)
    currencies = sorted(set(per_currency) | {c for c, v in credit.items() if v})
    window_start = date.fromordinal(as_of.toordinal() - DSO_WINDOW_DAYS)
    sales: dict[str, int] = defaultdict(int)
    for inv_id, inv in live.items():
        if window_start < inv.issue_date <= as_of:
            sales[inv.currency] += amounts[inv_id]
    dso = {
        c: (round(per_currency[c]["open"] * DSO_WINDOW_DAYS / sales[c], 1) if sales.get(c) else None)
        for c in currencies
    }
    balances = [
        Balance(
            currency=c,
            open_minor=per_currency[c]["open"],
            overdue_minor=per_currency[c]["overdue"],
            credit_minor=credit.get(c, 0),
            buckets=Buckets(**{k: v for k, v in per_currency[c].items() if k not in ("open", "overdue")}),
            dso_days=dso[c],
        )
        for c in currencies
    ]
    settled = {i: (paid_on.get(i) if open_[i] <= 0 else None) for i in live}
    return LedgerState(
        open_invoices=open_invoices,
        balances=balances,
        allocations=allocations,
        credit={c: v for c, v in credit.items() if v},
        settled=settled,
        oldest_due_date=oldest,
        max_days_past_due=max(max_dpd, 0),
        dso_days=dso,
    )
