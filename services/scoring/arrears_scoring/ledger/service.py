"""Apply ledger and collections events to an account and publish its new state."""

from __future__ import annotations

import uuid
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.compute import Documents, LedgerState, compute
from arrears_scoring.ledger.documents import case_rows, ledger_rows
from arrears_scoring.ledger.repository import LedgerRepository, OpenItem, SavedState
from arrears_scoring.risk.features import Record, SettledInvoice, history_features, invoice_features
from arrears_scoring.risk.model import RiskModel, risk_from_means, sigmoid
from arrears_scoring.risk.recommend import recommend
from arrears_shared.clock import Clock
from arrears_shared.events.envelope import CloudEvent, event_json
from arrears_shared.events.v1 import AccountUpdated, CaseEvent, Customer, OpenInvoice, Risk
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.topics import ACCOUNTS

SOURCE = "arrears/scoring"


def settled_history(docs: Documents, state: LedgerState) -> list[SettledInvoice]:
    """The account's fully settled invoices, as training and features see them."""
    out: list[SettledInvoice] = []
    for inv_id, day in state.settled.items():
        inv = docs.invoices.get(inv_id)
        if day is None or inv is None:
            continue
        out.append(SettledInvoice(inv.issue_date, inv.due_date, day, inv.amount_minor, inv_id in docs.ever_disputed))
    return sorted(out, key=lambda h: (h.settled_date, h.issue_date))


def training_records(account_id: str, docs: Documents, state: LedgerState) -> list[Record]:
    """The account's settled invoices as training records (the ledger's own history)."""
    out: list[Record] = []
    for inv_id, day in state.settled.items():
        inv = docs.invoices.get(inv_id)
        if day is None or inv is None:
            continue
        out.append(
            Record(
                account_id, inv_id, inv.issue_date, inv.due_date, day, inv.amount_minor, inv_id in docs.ever_disputed
            )
        )
    return out


@dataclass(frozen=True)
class Scored:
    risk: Risk
    invoices: list[OpenInvoice]
    items: list[OpenItem]
    base_logit: float | None  # the account's logit when nothing is open


def _account_rows(
    model: RiskModel, customer: Customer | None, docs: Documents, state: LedgerState, today: date
) -> list[list[float]]:
    """The feature rows (:meth:`RiskModel.row`) of the account's open invoices, in their order; with
    nothing open, one row: the account scored as a new invoice issued today. The history is sorted
    once; an invoice's known history is a prefix of it (settled before its issue date), and the
    history features of each prefix are computed once however many invoices share it."""
    history = settled_history(docs, state)  # oldest settlement first: known_before's order
    settled_days = [h.settled_date for h in history]
    summaries: dict[int, dict[str, float]] = {}

    def features_on(
        day: date, due: date, amount: int, open_due: list[date] | tuple[()] = (), open_amounts: list[int] | None = None
    ) -> dict[str, float]:
        k = bisect_left(settled_days, day)  # history[:k] is known_before(history, day)
        summary = summaries.get(k)
        if summary is None:
            summary = summaries[k] = history_features(history[:k])
        return invoice_features(history[:k], day, due, amount, open_due, summary, open_amounts)

    utilization = 0.0
    if customer and customer.credit_limit_minor and customer.currency:
        exposure = sum(b.open_minor - b.credit_minor for b in state.balances if b.currency == customer.currency)
        utilization = max(exposure, 0) / customer.credit_limit_minor
    account = {
        "broken_promises": float(len(docs.broken_promises)),
        "partial_payments": float(sum(1 for i in state.open_invoices if i.open_minor < i.amount_minor)),
        "credit_utilization": utilization,
    }
    # (issue date, settled on or date.max while open, due date, invoiced amount) of every live
    # invoice, in docs order
    live = [
        (other.issue_date, state.settled[other.invoice_id] or date.max, other.due_date, other.amount_minor)
        for other in docs.invoices.values()
        if other.invoice_id in state.settled
    ]
    rows: list[list[float]] = []
    for inv in state.open_invoices:
        issued = inv.issue_date
        open_at_issue = [(due, amount) for issue, until, due, amount in live if issue < issued and until >= issued]
        vec = features_on(
            issued, inv.due_date, inv.amount_minor, [d for d, _ in open_at_issue], [a for _, a in open_at_issue]
        )
        vec.update(account)
        vec["disputed"] = 1.0 if inv.disputed else 0.0
        vec["days_past_due"] = float(inv.days_past_due)
        rows.append(model.row(vec))
    if not rows:
        vec = features_on(today, today + timedelta(days=30), 0)
        vec.update(account)
        vec["amount_ratio"] = 1.0
        rows.append(model.row(vec))
    return rows


def score_accounts(
    model: RiskModel,
    thresholds: tuple[float, float, float],
    accounts: Sequence[tuple[Customer | None, Documents, LedgerState]],
    today: date,
) -> list[Scored]:
    """Many accounts' risks and open invoices with their late probabilities. The features are
    computed per account (:func:`_account_rows`), the model is applied once to the matrix of every
    account's rows (:meth:`RiskModel.score_rows`). The result is exactly that of scoring each
    invoice on its own (``known_before``, ``invoice_features`` and ``contributions`` per invoice;
    tests/scoring/test_publish_fast_path.py compares them)."""
    per_account = [_account_rows(model, customer, docs, state, today) for customer, docs, state in accounts]
    if not per_account:
        return []
    batch = model.score_rows([row for rows in per_account for row in rows], [len(rows) for rows in per_account])
    names = model.names
    out: list[Scored] = []
    first = 0
    for (_, _, state), rows, means in zip(accounts, per_account, batch.means, strict=True):
        logits = batch.logits[first : first + len(rows)]
        dpd = batch.dpd[first : first + len(rows)] if batch.dpd is not None else None
        first += len(rows)
        risk = risk_from_means(list(zip(names, means, strict=True)), logits, model, thresholds)
        if not state.open_invoices:
            out.append(Scored(risk, [], [], logits[0]))
            continue
        invoices: list[OpenInvoice] = []
        items: list[OpenItem] = []
        for n, inv in enumerate(state.open_invoices):
            logit = logits[n]
            static = logit - dpd[n] if dpd is not None else logit
            # a copy with the probability set, unvalidated as model_copy is (every other field is the
            # validated open invoice's own)
            invoices.append(inv.model_copy(update={"late_probability": round(sigmoid(logit), 4)}))
            items.append(OpenItem(inv.invoice_id, inv.currency, inv.open_minor, inv.due_date, static))
        out.append(Scored(risk, invoices, items, None))
    return out


def score_account(
    model: RiskModel,
    thresholds: tuple[float, float, float],
    customer: Customer | None,
    docs: Documents,
    state: LedgerState,
    today: date,
) -> Scored:
    """One account's :func:`score_accounts`."""
    return score_accounts(model, thresholds, [(customer, docs, state)], today)[0]


class LedgerService:
    def __init__(
        self,
        outbox: Outbox,
        clock: Clock,
        model: RiskModel,
        thresholds: tuple[float, float, float],
        repository: LedgerRepository | None = None,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.model = model
        self.thresholds = thresholds
        self.repository = repository or LedgerRepository()

    async def apply(self, session: AsyncSession, event: CloudEvent, data: BaseModel) -> None:
        """A canonical ledger event (ar.ledger.v1): stored, and the account marked for publishing
        in the same transaction (see :meth:`publish_dirty`)."""
        account_id: str = data.account_id  # type: ignore[attr-defined]
        await self.repository.store(
            session, account_id, ledger_rows(event.id, event.time, data), event.id, self.clock.now()
        )

    async def apply_many(self, session: AsyncSession, items: list[tuple[CloudEvent, Any]]) -> None:
        """Many canonical ledger events, in order: all their documents stored and their accounts
        marked changed in one round trip (see :meth:`LedgerRepository.store_many`)."""
        entries = [(data.account_id, ledger_rows(event.id, event.time, data), event.id) for event, data in items]
        await self.repository.store_many(session, entries, self.clock.now())

    async def apply_case_events(self, session: AsyncSession, items: list[tuple[CloudEvent, CaseEvent]]) -> None:
        """Many collections events, in order, as :meth:`apply_case_event` each, in one round trip."""
        entries = [
            (data.account_id, rows, event.id)
            for event, data in items
            if (rows := case_rows(event.id, event.type, event.time, data))
        ]
        await self.repository.store_many(session, entries, self.clock.now())

    async def apply_case_event(self, session: AsyncSession, event: CloudEvent, data: CaseEvent) -> None:
        """A collections event: disputes and promises are risk features; the rest is ignored."""
        rows = case_rows(event.id, event.type, event.time, data)
        if not rows:
            return
        await self.repository.store(session, data.account_id, rows, event.id, self.clock.now())

    async def publish_dirty(self, session: AsyncSession, limit: int = 500) -> int:
        """Publish the next version of up to ``limit`` accounts whose documents changed (one
        version per publish however many events arrived meanwhile). Returns how many."""
        ids = await self.repository.take_dirty(session, limit)
        if not ids:
            return 0
        return await self.publish_many(session, sorted(ids))

    async def publish(self, session: AsyncSession, account_id: str) -> AccountUpdated:
        """Publish the next version of one account now."""
        await self.publish_many(session, [account_id])
        state = await self.repository.get_state(session, account_id)
        return AccountUpdated.model_validate(state)

    async def publish_many(self, session: AsyncSession, account_ids: list[str]) -> int:
        """Publish the next version of many accounts: one load, one bulk write (the re-age)."""
        await self.repository.lock_accounts(session, account_ids)
        now = self.clock.now()
        loaded, versions = await self.repository.load_with_versions(session, account_ids)
        today = now.date()
        accounts = [(*loaded[account_id], compute(loaded[account_id][1], today)) for account_id in account_ids]
        scores = score_accounts(self.model, self.thresholds, accounts, today)  # the model once for the batch
        saved: list[SavedState] = []
        for account_id, (customer, _, state), scored in zip(account_ids, accounts, scores, strict=True):
            update = self.updated(account_id, customer, state, scored, now, versions.get(account_id, 0) + 1)
            payload = update.model_dump_json(exclude_none=True)  # once, for the row and the event
            saved.append(SavedState(update, scored.items, scored.base_logit, payload))
        await self.repository.save_states(session, saved, now, now.date())
        await self.outbox.add_payloads(
            session, [(ACCOUNTS, s.update.account_id, self.event_json(s.update, now, s.payload)) for s in saved]
        )
        return len(saved)

    @staticmethod
    def updated(
        account_id: str, customer: Customer | None, state: LedgerState, scored: Scored, now: datetime, version: int
    ) -> AccountUpdated:
        return AccountUpdated(
            account_id=account_id,
            version=version,
            as_of=now,
            customer=customer,
            open_invoices=scored.invoices,
            balances=state.balances,
            oldest_due_date=state.oldest_due_date,
            max_days_past_due=state.max_days_past_due,
            risk=scored.risk,
            credit_recommendation=recommend(scored.risk, customer, state.balances),
        )

    @staticmethod
    def event_json(update: AccountUpdated, now: datetime, payload: str) -> bytes:
        """The ``ar.account.updated`` event of ``update`` as JSON (what ``new_event(...).to_json()`` gives),
        around ``payload`` (``update.model_dump_json(exclude_none=True)``, which the caller has
        already: the state is serialized once, for the row and the event)."""
        return event_json(
            type="ar.account.updated",
            source=SOURCE,
            subject=update.account_id,
            time=now,
            id=f"{update.account_id}:{update.version}:{uuid.uuid4().hex[:8]}",
            data_json=payload,
        )
