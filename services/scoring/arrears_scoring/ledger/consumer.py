"""ar.ledger.v1 → the ledger service, one route per canonical type."""

from __future__ import annotations

from arrears_scoring.ledger.service import LedgerService
from arrears_shared.events.v1 import LEDGER_MODELS
from arrears_shared.messaging.consumer import EventRouter


def ledger_router(service: LedgerService) -> EventRouter:
    router = EventRouter()
    for event_type, model in LEDGER_MODELS.items():
        router.add(event_type, model, service.apply)
    return router
