"""Apply ledger events to an account and publish its new state."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.compute import LedgerState, compute
from arrears_scoring.ledger.repository import LedgerRepository
from arrears_scoring.risk.model import RiskModel
from arrears_shared.clock import Clock
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.events.v1 import (
    AccountUpdated,
    CreditNoteIssued,
    Customer,
    InvoiceAdjusted,
    InvoiceCancelled,
    InvoiceIssued,
    PaymentReceived,
    PaymentReversed,
)
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.topics import ACCOUNTS

SOURCE = "arrears/scoring"


def features(state: LedgerState, customer: Customer | None) -> dict[str, float]:
    open_total = sum(b.open_minor for b in state.balances)
    overdue_total = sum(b.overdue_minor for b in state.balances)
    utilization = 0.0
    if customer and customer.credit_limit_minor and customer.currency:
        exposure = sum(b.open_minor for b in state.balances if b.currency == customer.currency)
        utilization = exposure / customer.credit_limit_minor
    return {
        "max_days_past_due": float(state.max_days_past_due),
        "overdue_share": overdue_total / open_total if open_total else 0.0,
        "open_invoices": float(len(state.open_invoices)),
        "credit_utilization": utilization,
    }


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
        account_id: str = data.account_id  # type: ignore[attr-defined]
        await self.repository.lock_account(session, account_id)
        await self._store(session, event, data)
        await self.publish(session, account_id)

    async def _store(self, session: AsyncSession, event: CloudEvent, data: BaseModel) -> None:
        put = self.repository.put
        payload = data.model_dump(mode="json", exclude_none=True)
        at = event.time
        match data:
            case Customer():
                await put(
                    session,
                    account_id=data.account_id,
                    kind="customer",
                    doc_id=data.account_id,
                    data=payload,
                    at=at,
                    newest_wins=True,
                )
            case InvoiceIssued():
                if data.customer is not None:
                    await put(
                        session,
                        account_id=data.account_id,
                        kind="customer",
                        doc_id=data.account_id,
                        data=data.customer.model_dump(mode="json", exclude_none=True),
                        at=at,
                        newest_wins=True,
                    )
                await put(
                    session, account_id=data.account_id, kind="invoice", doc_id=data.invoice_id, data=payload, at=at
                )
            case InvoiceAdjusted():
                await put(
                    session,
                    account_id=data.account_id,
                    kind="adjustment",
                    doc_id=event.id,
                    ref_id=data.invoice_id,
                    data=payload,
                    at=at,
                )
            case InvoiceCancelled():
                await put(
                    session,
                    account_id=data.account_id,
                    kind="cancellation",
                    doc_id=data.invoice_id,
                    ref_id=data.invoice_id,
                    data=payload,
                    at=at,
                )
            case CreditNoteIssued():
                await put(
                    session,
                    account_id=data.account_id,
                    kind="credit_note",
                    doc_id=data.credit_note_id,
                    data=payload,
                    at=at,
                )
            case PaymentReceived():
                await put(
                    session, account_id=data.account_id, kind="payment", doc_id=data.payment_id, data=payload, at=at
                )
            case PaymentReversed():
                await put(
                    session,
                    account_id=data.account_id,
                    kind="reversal",
                    doc_id=data.payment_id,
                    ref_id=data.payment_id,
                    data=payload,
                    at=at,
                )

    async def publish(self, session: AsyncSession, account_id: str) -> AccountUpdated:
        now = self.clock.now()
        customer, docs = await self.repository.load(session, account_id)
        state = compute(docs, now.date())
        update = self.account_update(
            account_id, customer, state, now, await self.repository.current_version(session, account_id) + 1
        )
        await self.repository.save_state(session, account_id, update.version, update.model_dump(mode="json"), now)
        await self.outbox.add(session, ACCOUNTS, self._event(update, now))
        return update

    def account_update(
        self, account_id: str, customer: Customer | None, state: LedgerState, now: datetime, version: int
    ) -> AccountUpdated:
        return AccountUpdated(
            account_id=account_id,
            version=version,
            as_of=now,
            customer=customer,
            open_invoices=state.open_invoices,
            balances=state.balances,
            oldest_due_date=state.oldest_due_date,
            max_days_past_due=state.max_days_past_due,
            risk=self.model.score(features(state, customer), self.thresholds),
        )

    @staticmethod
    def _event(update: AccountUpdated, now: datetime) -> CloudEvent:
        return new_event(
            type="ar.account.updated",
            source=SOURCE,
            subject=update.account_id,
            data=update,
            time=now,
            id=f"{update.account_id}:{update.version}:{uuid.uuid4().hex[:8]}",
        )
