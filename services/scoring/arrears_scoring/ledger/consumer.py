"""ar.ledger.v1 and collections.events.v1 → the ledger service, in runs of consecutive events."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.service import LedgerService
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.events.v1 import LEDGER_MODELS, CaseEvent
from arrears_shared.messaging.consumer import EventRouter

# The collections events that are risk features (the rest are ignored by scoring).
CASE_FEATURE_TYPES = (
    "collections.dispute.opened",
    "collections.dispute.resolved",
    "collections.promise.made",
    "collections.promise.broken",
    "collections.payment_plan.installment_missed",
)


def ledger_router(service: LedgerService) -> EventRouter:
    """Every run of consecutive ledger events in a partition batch is applied in one call."""
    router = EventRouter()
    router.add_batch(dict(LEDGER_MODELS), service.apply_many, typed=True)
    return router


def collections_router(service: LedgerService) -> EventRouter:
    async def handle(session: AsyncSession, items: list[tuple[CloudEvent, Any]]) -> None:
        await service.apply_case_events(session, items)

    router = EventRouter()
    router.add_batch(dict.fromkeys(CASE_FEATURE_TYPES, CaseEvent), handle, typed=True)
    return router
