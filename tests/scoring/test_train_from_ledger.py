"""``arrears-scoring train`` without ``--csv``: the model is fitted on the ledger's own settled
invoices, read back from the real database, with a time-ordered holdout."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from arrears_scoring.ledger.service import LedgerService
from arrears_scoring.models import outbox
from arrears_scoring.risk.commands import run_train
from arrears_scoring.risk.features import Record
from arrears_scoring.risk.model import RiskModel
from arrears_scoring.risk.repository import ModelRepository
from arrears_scoring.risk.train import build_dataset, default_cutoff, train_all
from arrears_scoring.settings import ScoringSettings
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_engine, make_sessionmaker
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.events.v1 import Allocation, CaseEvent, InvoiceIssued, PaymentReceived
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.settings import async_database_url
from tests.conftest import Databases, migrated_database

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def ledger_history(n_accounts: int = 30) -> tuple[list[tuple[CloudEvent, object]], list[CloudEvent], list[Record]]:
    """Accounts that are habitually late or punctual, one invoice a month, each paid in full by an
    explicit allocation; the last invoice of every account stays open (not a training record) and
    one invoice of each late account is disputed. Returns the ledger events, the dispute events and
    the records training should see."""
    ledger: list[tuple[CloudEvent, object]] = []
    disputes: list[CloudEvent] = []
    expected: list[Record] = []
    for a in range(n_accounts):
        account = f"train-{a:03d}"
        late = a % 3 == 0
        for m in range(13):
            issue = date(2025, 1, 1) + timedelta(days=30 * m + a % 7)
            due = issue + timedelta(days=30)
            invoice = InvoiceIssued(
                invoice_id=f"{account}-i{m}",
                invoice_number=f"N{m}",
                account_id=account,
                issue_date=issue,
                due_date=due,
                currency="EUR",
                amount_minor=10_000 + 100 * m,
            )
            at = datetime.combine(issue, time(9), tzinfo=UTC)
            ledger.append(
                (new_event(type="ar.invoice.issued", source="t", subject=account, data=invoice, time=at), invoice)
            )
            if m == 12:
                continue  # still open: not settled, so not a training record
            settled = due + timedelta(days=(15 + m % 5) if late else -(m % 5))
            payment = PaymentReceived(
                payment_id=f"{account}-p{m}",
                account_id=account,
                currency="EUR",
                amount_minor=invoice.amount_minor,
                received_at=datetime.combine(settled, time(10), tzinfo=UTC),
                allocations=[Allocation(invoice_id=invoice.invoice_id, amount_minor=invoice.amount_minor)],
            )
            ledger.append(
                (
                    new_event(
                        type="ar.payment.received", source="t", subject=account, data=payment, time=payment.received_at
                    ),
                    payment,
                )
            )
            disputed = late and m == 3
            if disputed:
                case = CaseEvent(case_id=f"case-{account}", account_id=account, invoice_ids=[invoice.invoice_id])
                disputes.append(
                    new_event(type="collections.dispute.opened", source="t", subject=account, data=case, time=at)
                )
            expected.append(Record(account, invoice.invoice_id, issue, due, settled, invoice.amount_minor, disputed))
    return ledger, disputes, expected


@pytest.fixture
def train_database(databases: Databases, broker: str) -> str:
    """A database of its own: training reads every account of the ledger."""
    return async_database_url(migrated_database(databases, broker, "scoring_train"))


async def test_train_fits_on_the_ledgers_settled_invoices_time_ordered(
    train_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, disputes, expected = ledger_history()
    engine = make_engine(train_database, pool_size=2)
    sessionmaker = make_sessionmaker(engine)
    service = LedgerService(Outbox(outbox), FixedClock(NOW), RiskModel.default(), (0.25, 0.5, 0.75))
    try:
        async with sessionmaker() as session, session.begin():
            await service.apply_many(session, ledger)
            await service.apply_case_events(session, [(e, CaseEvent.model_validate(e.data)) for e in disputes])
        monkeypatch.setenv("ARREARS_DATABASE_URL", train_database)
        model = await run_train(ScoringSettings(), None, activate=True)

        # Every settled invoice (and no open one) is a record, with its settlement day and dispute.
        assert model.version.startswith("ledger-")
        assert model.metrics["train_n_final"] == len(expected)
        # The holdout is time-ordered: fitted on what was issued and settled before the cutoff
        # (70% of invoices by issue date), scored on what was issued on or after it.
        ds = build_dataset(expected)
        cutoff = default_cutoff(ds)
        assert model.metrics["cutoff"] == cutoff.isoformat()
        before = sum(1 for r in expected if r.issue_date < cutoff and r.settled_date < cutoff)
        assert model.metrics["train_n"] == before
        assert model.metrics["n"] == sum(1 for r in expected if r.issue_date >= cutoff)
        assert model.metrics["auc"] > 0.9  # habitual lateness is learnt from the ledger's own history
        # Exactly the model the same records give (the ledger reproduces them).
        reference = train_all(expected, model.version)
        assert model.intercept == pytest.approx(reference.intercept, rel=1e-6, abs=1e-9)
        for got, want in zip(model.features, reference.features, strict=True):
            assert got.name == want.name
            assert got.coef == pytest.approx(want.coef, rel=1e-6, abs=1e-9)
        async with sessionmaker() as session:
            active = await ModelRepository().active(session)
        assert active is not None
        assert active["version"] == model.version
    finally:
        await engine.dispose()
