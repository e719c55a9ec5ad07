"""ar.ledger.v1 and collections.events.v1 → the ledger service, one route per type."""

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
    router = EventRouter()
    for event_type, model in LEDGER_MODELS.items():
        router.add(event_type, model, service.apply)
    return router


def collections_router(service: LedgerService) -> EventRouter:
    async def handle(session: AsyncSession, event: CloudEvent, data: Any) -> None:
        await service.apply_case_event(session, event, data)

    router = EventRouter()
    for event_type in CASE_FEATURE_TYPES:
        router.add(event_type, CaseEvent, handle)
    return router
