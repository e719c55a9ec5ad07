"""The case_manager worker Deployment scales on lag to any replica count: timer sweepers running side by
side (as in several replicas) fire each due timer once, so one case opens per account and no
notification is requested twice. Real database; each sweeper has its own connections."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.cases.sweeper import Sweeper
from arrears_case_manager.models import accounts, cases, outbox, timeline
from arrears_case_manager.policy.models import load_policy
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_sessionmaker
from arrears_shared.events.v1 import AccountUpdated
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.topics import NOTIFICATIONS

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ACCOUNTS = 60
REPLICAS = 4


def _state(account_id: str) -> dict[str, object]:
    due = date(2026, 2, 20)  # 10 days overdue: the case opens at overdue_7
    return AccountUpdated.model_validate(
        {
            "account_id": account_id,
            "version": 1,
            "as_of": NOW,
            "customer": {
                "account_id": account_id,
                "name": "Test Customer",
                "email": f"{account_id.lower()}@example.com",
                "country": "DE",
                "timezone": "Europe/Berlin",
                "consent": {"email": True, "sms": False},
            },
            "open_invoices": [
                {
                    "invoice_id": f"INV-{account_id}",
                    "invoice_number": "1",
                    "currency": "EUR",
                    "amount_minor": 10_000,
                    "open_minor": 10_000,
                    "issue_date": due - timedelta(days=30),
                    "due_date": due,
                    "days_past_due": 10,
                }
            ],
            "balances": [
                {"currency": "EUR", "open_minor": 10_000, "overdue_minor": 10_000, "buckets": {"d1_30": 10_000}}
            ],
            "oldest_due_date": due,
            "max_days_past_due": 10,
            "risk": {"probability": 0.3, "tier": "medium", "model_version": "test"},
        }
    ).model_dump(mode="json")


async def test_parallel_sweepers_fire_each_timer_once(engine: AsyncEngine) -> None:
    prefix = f"SWP{uuid.uuid4().hex[:6].upper()}-"
    ids = [f"{prefix}{i}" for i in range(ACCOUNTS)]
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s, s.begin():
        await s.execute(
            insert(accounts),
            [
                {
                    "account_id": a,
                    "version": 1,
                    "state": _state(a),
                    "wake_at": NOW - timedelta(minutes=1),
                    "updated_at": NOW,
                }
                for a in ids
            ],
        )
    service = CaseService(Outbox(outbox), FixedClock(NOW), load_policy(None), "https://pay.example/{account_id}")
    sweepers = [Sweeper(service, sessionmaker, interval=0.05, batch=7) for _ in range(REPLICAS)]
    try:
        fired = list(await asyncio.gather(*(s.sweep_once() for s in sweepers for _ in range(6))))
        while any(more := await asyncio.gather(*(s.sweep_once() for s in sweepers))):
            fired += more
        async with sessionmaker() as s:
            opened = (
                await s.execute(
                    select(cases.c.account_id, func.count())
                    .where(cases.c.account_id.in_(ids))
                    .group_by(cases.c.account_id)
                )
            ).all()
            notifications = (
                await s.execute(
                    select(outbox.c.key, func.count())
                    .where(outbox.c.topic == NOTIFICATIONS, outbox.c.key.in_(ids))
                    .group_by(outbox.c.key)
                )
            ).all()
        assert sum(fired) == ACCOUNTS, "each due timer fired exactly once across the sweepers"
        assert dict(opened) == dict.fromkeys(ids, 1), "one case per account"
        assert notifications, "the opened cases requested their notifications"
        counts = {n for _, n in notifications}
        assert len(counts) == 1, f"every account got the same number of notification requests, not {counts}"
    finally:
        # Leave nothing a later test's sweeper or relay could pick up (the database is shared in the session).
        async with sessionmaker() as s, s.begin():
            case_ids = select(cases.c.case_id).where(cases.c.account_id.in_(ids))
            await s.execute(delete(timeline).where(timeline.c.case_id.in_(case_ids)))
            await s.execute(delete(cases).where(cases.c.account_id.in_(ids)))
            await s.execute(delete(accounts).where(accounts.c.account_id.in_(ids)))
            await s.execute(delete(outbox).where(outbox.c.key.in_(ids)))
