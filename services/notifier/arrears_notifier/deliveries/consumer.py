"""collections.notifications.v1 → record the request (the dispatcher sends it);
collections.events.v1 case resolved / written off → suppress what is still waiting."""

from __future__ import annotations

from arrears_notifier.deliveries.service import DeliveryService
from arrears_shared.events.v1 import CaseEvent, NotificationRequested
from arrears_shared.messaging.consumer import EventRouter


def notification_router(service: DeliveryService) -> EventRouter:
    router = EventRouter()
    router.add("collections.notification.requested", NotificationRequested, service.on_requested)
    return router


CLOSING_EVENTS = ("collections.case.resolved", "collections.case.written_off")


def case_router(service: DeliveryService) -> EventRouter:
    router = EventRouter()
    for event_type in CLOSING_EVENTS:
        router.add(event_type, CaseEvent, service.on_case_closed)
    return router
