"""Building account states and a case service for the case manager's tests."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.models import outbox, timeline
from arrears_case_manager.policy.models import load_policy
from arrears_shared.clock import FixedClock
from arrears_shared.events.v1 import AccountUpdated
from arrears_shared.messaging.outbox import Outbox

_versions = itertools.count(1)


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), tzinfo=UTC)


def account_state(
    account_id: str,
    *,
    today: date,
    invoices: list[tuple[str, date, int]],  # (invoice_id, due_date, open_minor)
    currency: str = "EUR",
    tier: str = "medium",
    probability: float = 0.4,
    terms: dict[str, Any] | None = None,
    email: bool = True,
    sms: bool = True,
    segment: str | None = None,
    timezone: str = "Europe/Berlin",
) -> AccountUpdated:
    open_invoices: list[dict[str, Any]] = [
        {
            "invoice_id": inv_id,
            "invoice_number": f"N-{inv_id}",
            "currency": currency,
            "amount_minor": amount,
            "open_minor": amount,
            "issue_date": due.replace(day=1).isoformat(),
            "due_date": due.isoformat(),
            "days_past_due": max((today - due).days, 0),
            "terms": terms,
        }
        for inv_id, due, amount in invoices
        if amount > 0
    ]
    total = sum(i["open_minor"] for i in open_invoices)
    overdue = sum(i["open_minor"] for i in open_invoices if i["days_past_due"] > 0)
    dues = [date.fromisoformat(i["due_date"]) for i in open_invoices]
    return AccountUpdated.model_validate(
        {
            "account_id": account_id,
            "version": next(_versions),
            "as_of": noon(today).isoformat(),
            "customer": {
                "account_id": account_id,
                "name": "Erika Mustermann",
                "email": "erika@example.com" if email else None,
                "phone": "+4915112345678" if sms else None,
                "country": "DE",
                "timezone": timezone,
                "language": "en",
                "consent": {"email": email, "sms": sms},
                "segment": segment,
            },
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
            "oldest_due_date": min(dues).isoformat() if dues else None,
            "max_days_past_due": max((i["days_past_due"] for i in open_invoices), default=0),
            "risk": {"probability": probability, "tier": tier, "model_version": "test", "reasons": []},
        }
    )


def make_service(clock: FixedClock, policy_file: str | None = None) -> CaseService:
    return CaseService(Outbox(outbox), clock, load_policy(policy_file), "https://pay.example/{account_id}/{case_id}")


async def apply(service: CaseService, session: AsyncSession, state: AccountUpdated) -> None:
    await service.on_account_updated(session, None, state)


async def outbox_events(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(select(outbox.c.payload).where(outbox.c.key == account_id).order_by(outbox.c.id))
    return [orjson.loads(r) for r in rows.scalars()]


async def kinds(session: AsyncSession, case_id: str) -> list[str]:
    rows = await session.execute(select(timeline.c.kind).where(timeline.c.case_id == case_id).order_by(timeline.c.id))
    return list(rows.scalars())
