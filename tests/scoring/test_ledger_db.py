"""Scoring's ledger against the real database: versions, convergence, collections features,
the daily re-age, and the account list API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.accounts import endpoints
from arrears_scoring.accounts.service import AccountQueries
from arrears_scoring.deps import account_queries, read_session
from arrears_scoring.ledger.compute import Documents, compute
from arrears_scoring.ledger.reage import Reager
from arrears_scoring.ledger.service import LedgerService, Scored, score_account
from arrears_scoring.models import account_balances, accounts, documents, open_items, outbox
from arrears_scoring.risk.model import RiskModel
from arrears_shared.clock import FixedClock
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.events.v1 import (
    AccountUpdated,
    CaseEvent,
    Customer,
    InvoiceIssued,
    PaymentReceived,
    PaymentReversed,
)
from arrears_shared.http import install_problem_handlers
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.topics import ACCOUNTS

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def make_service(clock: FixedClock) -> LedgerService:
    return LedgerService(Outbox(outbox), clock, RiskModel.default(), (0.25, 0.5, 0.75))


def envelope(i: int, data: BaseModel, type_: str, at: datetime | None = None) -> CloudEvent:
    account = data.account_id  # type: ignore[attr-defined]
    return new_event(type=type_, source="test", subject=account, data=data, time=at or NOW, id=f"{account}-e{i}")


def customer(account: str, limit: int | None = 100_000) -> Customer:
    return Customer(
        account_id=account,
        name="Acme",
        country="DE",
        timezone="Europe/Berlin",
        credit_limit_minor=limit,
        currency="EUR" if limit is not None else None,
    )


def inv(account: str, n: int, amount: int, due: date) -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id=f"{account}-i{n}",
        invoice_number=f"N{n}",
        account_id=account,
        issue_date=due - timedelta(days=30),
        due_date=due,
        currency="EUR",
        amount_minor=amount,
    )


async def published(session: AsyncSession, account: str) -> list[AccountUpdated]:
    rows = await session.scalars(
        select(outbox.c.payload).where(outbox.c.topic == ACCOUNTS, outbox.c.key == account).order_by(outbox.c.id)
    )
    return [AccountUpdated.model_validate(json.loads(p)["data"]) for p in rows]


async def test_each_change_publishes_the_next_version_with_risk_and_recommendation(session: AsyncSession) -> None:
    service = make_service(FixedClock(NOW))
    acc = "db-a1"
    events = [
        envelope(1, customer(acc), "ar.customer.upserted"),
        envelope(2, inv(acc, 1, 50_000, date(2026, 4, 1)), "ar.invoice.issued"),
        envelope(3, inv(acc, 2, 30_000, date(2026, 6, 20)), "ar.invoice.issued"),
        envelope(
            4,
            PaymentReceived(
                payment_id=f"{acc}-p1",
                account_id=acc,
                currency="EUR",
                amount_minor=10_000,
                received_at=NOW - timedelta(days=1),
            ),
            "ar.payment.received",
        ),
    ]
    for e in events:
        await service.apply(session, e, _data(e))
        await service.publish_dirty(session)
    states = await published(session, acc)
    assert [s.version for s in states] == [1, 2, 3, 4]
    last = states[-1]
    assert {i.invoice_id: i.open_minor for i in last.open_invoices} == {f"{acc}-i1": 40_000, f"{acc}-i2": 30_000}
    assert last.max_days_past_due == 61
    assert last.balances[0].buckets.d61_90 == 40_000
    assert last.balances[0].buckets.current == 30_000
    assert all(i.late_probability is not None for i in last.open_invoices)
    assert last.risk.reasons, "a score carries the features that pushed it most"
    assert last.credit_recommendation is not None
    # the summary for filters and re-age is kept in step
    row = (await session.execute(select(accounts).where(accounts.c.account_id == acc))).one()
    assert (row.version, row.tier, row.max_days_past_due) == (4, last.risk.tier, 61)
    items = (await session.execute(select(open_items.c.invoice_id).where(open_items.c.account_id == acc))).all()
    assert len(items) == 2


async def test_a_burst_of_events_on_one_account_publishes_one_next_version(session: AsyncSession) -> None:
    service = make_service(FixedClock(NOW))
    acc = "db-burst"
    first = envelope(1, inv(acc, 1, 1000, date(2026, 5, 1)), "ar.invoice.issued")
    await service.apply(session, first, _data(first))
    assert await service.publish_dirty(session) == 1
    for n in range(2, 6):
        e = envelope(n, inv(acc, n, 1000, date(2026, 5, 1)), "ar.invoice.issued")
        await service.apply(session, e, _data(e))
    await service.apply(session, first, _data(first))  # a redelivery changes nothing
    assert await service.publish_dirty(session) == 1
    assert await service.publish_dirty(session) == 0
    states = await published(session, acc)
    assert [s.version for s in states] == [1, 2]
    assert len(states[-1].open_invoices) == 5


def _data(event: CloudEvent) -> BaseModel:
    from arrears_shared.events.v1 import EVENT_MODELS

    return EVENT_MODELS[event.type].model_validate(event.data)


async def _final_state(session: AsyncSession, events: list[CloudEvent]) -> dict[str, Any]:
    service = make_service(FixedClock(NOW))
    for e in events:
        await service.apply(session, e, _data(e))
        await service.publish_dirty(session)
    account = events[0].subject
    state = await session.scalar(select(accounts.c.state).where(accounts.c.account_id == account))
    assert state is not None
    return {k: v for k, v in state.items() if k not in ("version", "as_of")}


async def test_out_of_order_and_redelivered_events_converge_in_the_database(session: AsyncSession) -> None:
    acc = "db-conv"
    pay = PaymentReceived(
        payment_id="p1", account_id=acc, currency="EUR", amount_minor=70_000, received_at=NOW - timedelta(days=5)
    )
    events = [
        envelope(1, customer(acc), "ar.customer.upserted"),
        envelope(2, inv(acc, 1, 50_000, date(2026, 4, 1)), "ar.invoice.issued"),
        envelope(3, inv(acc, 2, 30_000, date(2026, 5, 1)), "ar.invoice.issued"),
        envelope(4, pay, "ar.payment.received"),
        envelope(5, PaymentReversed(payment_id="p1", account_id=acc, reason="NSF"), "ar.payment.reversed"),
    ]
    in_order = await _final_state(session, events)
    await session.execute(delete(documents).where(documents.c.account_id == acc))
    await session.execute(delete(accounts).where(accounts.c.account_id == acc))
    shuffled = [events[4], events[3], events[2], events[0], events[3], events[1]]
    assert await _final_state(session, shuffled) == in_order
    assert sum(i["open_minor"] for i in in_order["open_invoices"]) == 80_000


async def test_disputes_and_broken_promises_from_collections_events_feed_the_score(session: AsyncSession) -> None:
    service = make_service(FixedClock(NOW))
    acc = "db-disp"
    for e in [
        envelope(1, customer(acc), "ar.customer.upserted"),
        envelope(2, inv(acc, 1, 50_000, date(2026, 5, 20)), "ar.invoice.issued"),
    ]:
        await service.apply(session, e, _data(e))
        await service.publish_dirty(session)
    before = (await published(session, acc))[-1]
    dispute = CaseEvent(case_id="c1", account_id=acc, invoice_ids=[f"{acc}-i1"])
    await service.apply_case_event(session, envelope(3, dispute, "collections.dispute.opened"), dispute)
    await service.publish_dirty(session)
    broken = CaseEvent(case_id="c1", account_id=acc, reference_id="promise-1")
    await service.apply_case_event(session, envelope(4, broken, "collections.promise.broken"), broken)
    await service.publish_dirty(session)
    after = (await published(session, acc))[-1]
    assert after.open_invoices[0].disputed is True
    assert after.risk.probability > before.risk.probability
    resolved = CaseEvent(case_id="c1", account_id=acc, invoice_ids=[f"{acc}-i1"])
    at = NOW + timedelta(hours=1)
    await service.apply_case_event(session, envelope(5, resolved, "collections.dispute.resolved", at), resolved)
    await service.publish_dirty(session)
    assert (await published(session, acc))[-1].open_invoices[0].disputed is False
    # a case event scoring does not use publishes nothing
    count = len(await published(session, acc))
    other = CaseEvent(case_id="c1", account_id=acc, stage="overdue_7")
    await service.apply_case_event(session, envelope(6, other, "collections.case.stage_changed"), other)
    await service.publish_dirty(session)
    assert len(await published(session, acc)) == count


class _OneSession:
    """A sessionmaker that hands out the test's session (its commits are savepoints)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def __call__(self) -> _OneSession:
        return self

    async def __aenter__(self) -> AsyncSession:
        session = self.session
        session.begin = session.begin_nested  # type: ignore[method-assign]
        return session

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_daily_reage_publishes_only_accounts_whose_bucket_level_or_tier_changed(session: AsyncSession) -> None:
    clock = FixedClock(NOW)
    service = make_service(clock)
    # moves from 1-30 to 31-60 on 2026-06-02 (due 2026-05-02: 30 days past due on 06-01)
    moving, steady = "db-reage-move", "db-reage-steady"
    for e in [
        envelope(1, inv(moving, 1, 10_000, date(2026, 5, 2)), "ar.invoice.issued"),
        envelope(2, inv(steady, 1, 10_000, date(2026, 5, 10)), "ar.invoice.issued"),
        envelope(3, inv(steady, 2, 10_000, date(2026, 5, 11)), "ar.invoice.issued"),
    ]:
        await service.apply(session, e, _data(e))
        await service.publish_dirty(session)
    reager = Reager(service, _OneSession(session), level_offsets=[-3, 0, 1, 7, 14, 30, 60])  # type: ignore[arg-type]
    # same day: nothing to do
    ids = await reager.changed(session, NOW.date())
    assert moving not in ids
    assert steady not in ids
    clock.set(NOW + timedelta(days=1))
    ids = await reager.changed(session, clock.now().date())
    assert moving in ids
    assert steady not in ids  # 22 → 23 days: same bucket, no level day, same tier
    before = len(await published(session, moving))
    await reager.run_once()
    states = await published(session, moving)
    assert len(states) == before + 1
    assert states[-1].balances[0].buckets.d31_60 == 10_000
    assert states[-1].version == states[-2].version + 1
    assert moving not in await reager.changed(session, clock.now().date())
    # the level day 30 of "steady" (oldest due 2026-05-10) is crossed on 2026-06-09
    assert steady in await reager.changed(session, date(2026, 6, 9))


@pytest.fixture
async def client(session: AsyncSession) -> AsyncIterator[httpx.AsyncClient]:
    from fastapi import FastAPI

    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(endpoints.router)
    queries = AccountQueries(RiskModel.default())

    async def one_session() -> AsyncIterator[AsyncSession]:
        yield session

    app.dependency_overrides[read_session] = one_session
    app.dependency_overrides[account_queries] = lambda: queries
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_account_api_lists_with_filters_and_cursor(session: AsyncSession, client: httpx.AsyncClient) -> None:
    service = make_service(FixedClock(NOW))
    for n in range(5):
        acc = f"db-list-{n}"
        due = date(2026, 5, 30) - timedelta(days=40 * n)
        e = envelope(n, inv(acc, 1, 1000 * (n + 1), due), "ar.invoice.issued")
        await service.apply(session, e, _data(e))
        await service.publish_dirty(session)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, "currency": "EUR", "min_overdue_minor": 2000}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/accounts", params=params)).json()
        seen += [s["account_id"] for s in page["items"] if s["account_id"].startswith("db-list-")]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"db-list-{n}" for n in range(1, 5)]
    one = (await client.get("/v1/accounts/db-list-4")).json()
    tier = one["risk"]["tier"]
    by_tier = (await client.get("/v1/accounts", params={"tier": tier, "limit": 500})).json()
    assert "db-list-4" in [s["account_id"] for s in by_tier["items"]]
    assert all(s["risk"]["tier"] == tier for s in by_tier["items"])
    bad = await client.get("/v1/accounts", params={"min_overdue_minor": 5})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/v1/accounts", params={"cursor": "%%%"})).status_code == 400
    assert (await client.get("/v1/accounts/nope")).status_code == 404
    assert (await client.get("/v1/model")).json()["version"] == "default-2"


async def test_reage_sql_sees_a_tier_change_the_python_score_agrees_with(session: AsyncSession) -> None:
    clock = FixedClock(NOW)
    # 20 → 21 days past due: no bucket or level day crossed; p goes 0.289 → 0.299 with the default model
    service = LedgerService(Outbox(outbox), clock, RiskModel.default(), (0.295, 0.5, 0.75))
    acc = "db-reage-tier"
    e = envelope(1, inv(acc, 1, 10_000, date(2026, 5, 12)), "ar.invoice.issued")
    await service.apply(session, e, _data(e))
    await service.publish_dirty(session)
    assert (await published(session, acc))[-1].risk.tier == "low"
    reager = Reager(service, _OneSession(session), level_offsets=[-3, 0, 1, 7, 14, 30, 60])  # type: ignore[arg-type]
    clock.set(NOW + timedelta(days=1))
    assert acc in await reager.changed(session, clock.now().date())
    await reager.run_once()
    assert (await published(session, acc))[-1].risk.tier == "medium"


async def test_publisher_drains_every_changed_account_in_batches(session: AsyncSession) -> None:
    from arrears_scoring.ledger.publisher import AccountPublisher

    service = make_service(FixedClock(NOW))
    for n in range(5):
        e = envelope(n, inv(f"db-pub-{n}", 1, 1000, date(2026, 5, 1)), "ar.invoice.issued")
        await service.apply(session, e, _data(e))
    publisher = AccountPublisher(service, _OneSession(session), batch=2)  # type: ignore[arg-type]
    assert await publisher.drain() == 5
    assert await publisher.drain() == 0
    assert all([(await published(session, f"db-pub-{n}"))[-1].version == 1 for n in range(5)])


async def _documents(session: AsyncSession, account: str) -> list[tuple[Any, ...]]:
    rows = await session.execute(
        select(documents.c.kind, documents.c.doc_id, documents.c.ref_id, documents.c.data, documents.c.at)
        .where(documents.c.account_id == account)
        .order_by(documents.c.kind, documents.c.doc_id)
    )
    return [tuple(r) for r in rows]


async def test_a_run_applied_in_one_call_stores_what_event_by_event_stores(session: AsyncSession) -> None:
    """apply_many / apply_case_events (the consumer's batch route) against apply event by event:
    the same documents, including redelivered copies (first wins) and newest-wins customers and
    disputes arriving out of order inside one run; every account marked changed."""
    service = make_service(FixedClock(NOW))
    pay = PaymentReceived(
        payment_id="p1", account_id="ACC", currency="EUR", amount_minor=70_000, received_at=NOW - timedelta(days=5)
    )

    def ledger(acc: str) -> list[CloudEvent]:
        later = customer(acc, limit=200_000)
        return [
            envelope(1, customer(acc), "ar.customer.upserted", NOW - timedelta(days=1)),
            envelope(2, inv(acc, 1, 50_000, date(2026, 4, 1)), "ar.invoice.issued"),
            envelope(3, later, "ar.customer.upserted", NOW),  # newest wins...
            envelope(4, customer(acc, limit=5), "ar.customer.upserted", NOW - timedelta(days=2)),  # ...not this
            envelope(2, inv(acc, 1, 50_000, date(2026, 4, 1)), "ar.invoice.issued"),  # a redelivery
            envelope(5, pay.model_copy(update={"account_id": acc}), "ar.payment.received"),
            envelope(6, PaymentReversed(payment_id="p1", account_id=acc, reason="NSF"), "ar.payment.reversed"),
        ]

    def cases(acc: str) -> list[CloudEvent]:
        def case(i: int, type_: str, at: datetime) -> CloudEvent:
            data = CaseEvent(case_id="c1", account_id=acc, invoice_ids=[f"{acc}-i1"], reference_id="pr1")
            return new_event(type=type_, source="test", subject=acc, data=data, time=at, id=f"{acc}-c{i}")

        return [
            case(1, "collections.dispute.resolved", NOW),
            case(2, "collections.dispute.opened", NOW - timedelta(hours=1)),  # older: loses
            case(3, "collections.promise.made", NOW),
            case(4, "collections.promise.broken", NOW),
            case(5, "collections.stage.changed", NOW),  # not a feature: nothing stored
        ]

    one, many = "batch-one", "batch-many"
    for e in ledger(one):
        await service.apply(session, e, _data(e))
    for e in cases(one):
        await service.apply_case_event(session, e, CaseEvent.model_validate(e.data))
    await service.apply_many(session, [(e, _data(e)) for e in ledger(many)])
    await service.apply_case_events(session, [(e, CaseEvent.model_validate(e.data)) for e in cases(many)])

    def renamed(rows: list[tuple[Any, ...]], acc: str) -> str:
        return json.dumps([[str(v) for v in r] for r in rows], sort_keys=True).replace(acc, "X")

    stored_one, stored_many = await _documents(session, one), await _documents(session, many)
    assert renamed(stored_many, many) == renamed(stored_one, one)
    assert ("customer", many) in [(r[0], r[1]) for r in stored_many]
    assert next(r[3] for r in stored_many if r[0] == "customer")["credit_limit_minor"] == 200_000
    assert next(r[3] for r in stored_many if r[0] == "dispute")["open"] is False
    assert await service.publish_dirty(session) >= 2
    assert [u.version for u in await published(session, many)] == [1]


def _scored_alone(
    service: LedgerService, account_id: str, customer: Customer | None, docs: Documents, version: int
) -> tuple[AccountUpdated, Scored]:
    """One account's update and scores computed on their own, outside the publisher's batch."""
    state = compute(docs, NOW.date())
    scored = score_account(service.model, service.thresholds, customer, docs, state, NOW.date())
    return service.updated(account_id, customer, state, scored, NOW, version), scored


async def test_the_summary_rows_hold_exactly_what_was_computed(session: AsyncSession) -> None:
    """States, open items and balances go to PostgreSQL as JSON rows: every value arrives as
    computed (floats bit for bit, dates, NULLs), and the stored state is the published payload."""
    service = make_service(FixedClock(NOW))
    acc, empty = "db-exact", "db-exact-none"
    events = [
        envelope(1, customer(acc), "ar.customer.upserted"),
        envelope(2, inv(acc, 1, 123_457, date(2026, 3, 3)), "ar.invoice.issued"),
        envelope(3, inv(acc, 2, 98_765, date(2026, 6, 20)), "ar.invoice.issued"),
        envelope(4, customer(empty, limit=None), "ar.customer.upserted"),
    ]
    for e in events:
        await service.apply(session, e, _data(e))
    loaded, _ = await service.repository.load_with_versions(session, [acc, empty])
    expected = {a: _scored_alone(service, a, *loaded[a], 1) for a in (acc, empty)}
    await service.publish_many(session, [acc, empty])
    for a, (update, scored) in expected.items():
        row = (await session.execute(select(accounts).where(accounts.c.account_id == a))).one()
        assert (row.version, row.tier, row.probability) == (1, update.risk.tier, update.risk.probability)
        assert (row.max_days_past_due, row.oldest_due_date) == (update.max_days_past_due, update.oldest_due_date)
        assert row.base_logit == scored.base_logit
        assert AccountUpdated.model_validate(row.state).model_dump(exclude={"as_of"}) == update.model_dump(
            exclude={"as_of"}
        )
        items = (await session.execute(select(open_items).where(open_items.c.account_id == a))).all()
        assert sorted((i.invoice_id, i.currency, i.open_minor, i.due_date, i.static_logit) for i in items) == sorted(
            (i.invoice_id, i.currency, i.open_minor, i.due_date, i.static_logit) for i in scored.items
        )
        balances = (await session.execute(select(account_balances).where(account_balances.c.account_id == a))).all()
        assert sorted((b.currency, b.open_minor, b.overdue_minor, b.credit_minor) for b in balances) == sorted(
            (b.currency, b.open_minor, b.overdue_minor, b.credit_minor) for b in update.balances
        )
    assert expected[empty][1].base_logit is not None and not expected[empty][1].items
    assert expected[acc][1].base_logit is None and len(expected[acc][1].items) == 2
