"""Raw ERP CloudEvents published on ar.inbound.v1 get the same checks as POST /v1/events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.events.service import IngestService
from arrears_shared.errors import ConflictError, PermanentError
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.messaging.consumer import EventRouter, Route


def inbound_router(service: IngestService) -> EventRouter:
    async def handle(session: AsyncSession, event: CloudEvent, _: object) -> None:
        result = (await service.accept(session, [event.model_dump(mode="json", exclude_none=True)]))[0]
        if result.status == "rejected":
            raise PermanentError("; ".join(f"{e['field']}: {e['message']}" for e in result.errors))
        if result.status == "conflict":
            raise ConflictError(result.errors[0]["message"])

    router = EventRouter()
    router.fallback = Route(None, handle)
    return router
