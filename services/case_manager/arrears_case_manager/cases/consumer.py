"""ar.accounts.v1 and collections.deliveries.v1 → the case service. A run of account updates is applied
in one call (:meth:`CaseService.apply_updates`); if that fails, the consumer applies them one by one."""

from __future__ import annotations

from arrears_case_manager.cases.service import CaseService
from arrears_shared.events.v1 import AccountUpdated, DeliveryUpdated
from arrears_shared.messaging.consumer import EventRouter


def case_router(service: CaseService) -> EventRouter:
    router = EventRouter()
    router.add_batch({"ar.account.updated": AccountUpdated}, service.apply_updates, typed=True)
    router.add("collections.delivery.updated", DeliveryUpdated, service.on_delivery_updated)
    return router
