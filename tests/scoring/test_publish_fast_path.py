"""The publisher's scoring (history sorted once, a prefix per invoice, features of each history
computed once, contributions without a call per feature, the summary tables written from arrays)
gives exactly the payload of the per-invoice path it replaced, kept here as the reference."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from arrears_scoring.ledger.compute import Documents, LedgerState, compute
from arrears_scoring.ledger.documents import DocRow, from_rows, ledger_rows, wins
from arrears_scoring.ledger.service import Scored, score_account, score_accounts, settled_history
from arrears_scoring.risk.features import LEDGER_FEATURES, invoice_features, known_before
from arrears_scoring.risk.model import RiskModel, risk_of, sigmoid
from arrears_scoring.risk.recommend import recommend
from arrears_shared.events.v1 import AccountUpdated, Customer
from tests.scoring.test_ledger_properties import account_events

AS_OF = date(2026, 6, 30)
THRESHOLDS = (0.3, 0.6, 0.85)


def reference_score(
    model: RiskModel, customer: Customer | None, docs: Documents, state: LedgerState, today: date
) -> tuple[Any, list[Any], list[tuple[str, float]], float | None]:
    """The previous implementation: every open invoice's history and features on their own."""
    history = settled_history(docs, state)
    utilization = 0.0
    if customer and customer.credit_limit_minor and customer.currency:
        exposure = sum(b.open_minor - b.credit_minor for b in state.balances if b.currency == customer.currency)
        utilization = max(exposure, 0) / customer.credit_limit_minor
    account = {
        "broken_promises": float(len(docs.broken_promises)),
        "partial_payments": float(sum(1 for i in state.open_invoices if i.open_minor < i.amount_minor)),
        "credit_utilization": utilization,
    }
    vectors: list[dict[str, float]] = []
    invoices = []
    statics: list[tuple[str, float]] = []
    for inv in state.open_invoices:
        open_at_issue = [
            other
            for other in docs.invoices.values()
            if other.invoice_id in state.settled
            and other.issue_date < inv.issue_date
            and (state.settled[other.invoice_id] or date.max) >= inv.issue_date
        ]
        vec = invoice_features(
            known_before(history, inv.issue_date),
            inv.issue_date,
            inv.due_date,
            inv.amount_minor,
            [other.due_date for other in open_at_issue],
            open_amounts=[other.amount_minor for other in open_at_issue],
        )
        vec.update(account)
        vec["disputed"] = 1.0 if inv.disputed else 0.0
        vec["days_past_due"] = float(inv.days_past_due)
        vectors.append(vec)
        contributions = {f.name: f.contribution(vec.get(f.name, f.center)) for f in model.features}
        logit = model.intercept + sum(contributions.values())
        invoices.append(inv.model_copy(update={"late_probability": round(sigmoid(logit), 4)}))
        statics.append((inv.invoice_id, logit - contributions.get("days_past_due", 0.0)))
    base_logit = None
    if not vectors:
        vec = invoice_features(known_before(history, today), today, today + timedelta(days=30), 0)
        vec.update(account)
        vec["amount_ratio"] = 1.0
        vectors.append(vec)
        base_logit = model.logit(vec)
    return risk_of(vectors, model, THRESHOLDS), invoices, statics, base_logit


def payload(scored_risk: Any, invoices: list[Any], customer: Customer | None, state: LedgerState) -> dict[str, Any]:
    update = AccountUpdated(
        account_id="acc-1",
        version=1,
        as_of=datetime(2026, 6, 30, 12, tzinfo=UTC),
        customer=customer,
        open_invoices=invoices,
        balances=state.balances,
        oldest_due_date=state.oldest_due_date,
        max_days_past_due=state.max_days_past_due,
        risk=scored_risk,
        credit_recommendation=recommend(scored_risk, customer, state.balances),
    )
    return update.model_dump(mode="json", exclude_none=True)


def _docs_of(events: list[Any], broken: int) -> Documents:
    store: dict[tuple[str, str], tuple[DocRow, str]] = {}
    for event_id, at, data in events:
        for row in ledger_rows(event_id, at, data):
            old = store.get((row.kind, row.doc_id))
            if wins(row, event_id, old[0] if old else None, old[1] if old else ""):
                store[(row.kind, row.doc_id)] = (row, event_id)
    _, docs = from_rows((r.kind, r.doc_id, r.ref_id, r.data, r.at) for r, _ in store.values())
    docs.broken_promises |= {f"b{n}" for n in range(broken)}
    return docs


@settings(max_examples=300, deadline=None)
@given(
    events=account_events(),
    disputed=st.sets(st.sampled_from([f"inv-{i}" for i in range(5)])),
    broken=st.integers(0, 3),
    limit=st.sampled_from([None, 1, 5_000, 100_000]),
    trained=st.booleans(),
)
def test_publisher_scoring_equals_the_per_invoice_path(
    events: list[Any], disputed: set[str], broken: int, limit: int | None, trained: bool
) -> None:
    # the account's documents (the database's keep/replace rules), with disputes and broken promises
    docs = _docs_of(events, broken)
    docs.disputed |= disputed & set(docs.invoices)
    docs.ever_disputed |= disputed & set(docs.invoices)
    state = compute(docs, AS_OF)
    customer = Customer(
        account_id="acc-1",
        name="A",
        country="DE",
        timezone="Europe/Berlin",
        credit_limit_minor=limit,
        currency="EUR" if limit is not None else None,
    )
    model = RiskModel.default()
    if trained:  # every trained feature in play, with a cap and a center
        raw = model.as_dict()
        raw["features"] += [
            {"name": n, "coef": 0.07 * (k + 1), "center": 0.5, "cap": 40}
            for k, n in enumerate(
                [
                    "last_days_late",
                    "past_invoices_log",
                    "no_history",
                    "days_since_last_settlement",
                    "terms_days",
                    "open_at_issue",
                    "overdue_at_issue",
                    "max_days_overdue_at_issue",
                    *LEDGER_FEATURES,
                ]
            )
        ]
        model = RiskModel.from_dict(raw)

    fast: Scored = score_account(model, THRESHOLDS, customer, docs, state, AS_OF)
    risk, invoices, statics, base_logit = reference_score(model, customer, docs, state, AS_OF)

    assert payload(fast.risk, fast.invoices, customer, state) == payload(risk, invoices, customer, state)
    assert fast.risk == risk
    assert [(i.invoice_id, i.static_logit) for i in fast.items] == statics
    assert fast.base_logit == base_logit


@settings(max_examples=100, deadline=None)
@given(accounts=st.lists(st.tuples(account_events(), st.integers(0, 3)), min_size=1, max_size=6))
def test_a_batch_of_accounts_scores_as_each_account_alone(accounts: list[tuple[list[Any], int]]) -> None:
    """The publisher applies the model once to the rows of every account of a batch (some with many
    open invoices, some with none): each account's result is the one it gets alone, and the
    per-invoice path's."""
    model = RiskModel.default()
    batch = []
    for events, broken in accounts:
        docs = _docs_of(events, broken)
        batch.append((None, docs, compute(docs, AS_OF)))
    together = score_accounts(model, THRESHOLDS, batch, AS_OF)
    assert together == [score_account(model, THRESHOLDS, c, d, s, AS_OF) for c, d, s in batch]
    for scored, (customer, docs, state) in zip(together, batch, strict=True):
        risk, invoices, statics, base_logit = reference_score(model, customer, docs, state, AS_OF)
        assert scored.risk == risk
        assert scored.invoices == invoices
        assert [(i.invoice_id, i.static_logit) for i in scored.items] == statics
        assert scored.base_logit == base_logit


@settings(max_examples=100, deadline=None)
@given(events=account_events())
def test_documents_read_from_json_text_equal_those_read_from_dicts(events: list[Any]) -> None:
    """The publisher reads each document's data as JSON text and validates it straight from it; the
    documents are those the dicts give (as the other readers and the property tests build them)."""
    rows = [(r.kind, r.doc_id, r.ref_id, r.data, r.at) for e, at, data in events for r in ledger_rows(e, at, data)]
    as_text = [(k, d, ref, orjson.dumps(data).decode(), at) for k, d, ref, data, at in rows]
    assert from_rows(as_text) == from_rows(rows)
