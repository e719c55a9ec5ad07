"""The operator's timer metrics come from the real case_manager tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.models import accounts, outbox
from arrears_case_manager.policy.models import load_policy
from arrears_shared.clock import FixedClock
from arrears_shared.messaging.outbox import Outbox

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


async def test_due_summary_counts_due_timers_and_the_oldest_delay(session: AsyncSession) -> None:
    service = CaseService(Outbox(outbox), FixedClock(NOW), load_policy(None), "https://pay.example/{account_id}")
    before, _ = await service.due_summary(session)  # rows other tests committed, if any
    wakes = [NOW - timedelta(minutes=30), NOW - timedelta(seconds=5), NOW + timedelta(hours=1), None]
    await session.execute(
        insert(accounts),
        [
            {"account_id": f"ACC-M{i}", "version": 1, "state": {}, "wake_at": wake, "updated_at": NOW}
            for i, wake in enumerate(wakes)
        ],
    )
    count, late = await service.due_summary(session)
    assert count == before + 2  # the future timer and the account without one are not due
    assert late >= 30 * 60
