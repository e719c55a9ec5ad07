"""collections.notifications.v1 → record the request (the dispatcher sends it)."""

from __future__ import annotations

from arrears_notifier.deliveries.service import DeliveryService
from arrears_shared.events.v1 import NotificationRequested
from arrears_shared.messaging.consumer import EventRouter


def notification_router(service: DeliveryService) -> EventRouter:
    router = EventRouter()
    router.add("collections.notification.requested", NotificationRequested, service.on_requested)
    return router
