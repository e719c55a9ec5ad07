"""Ingest's composition: HTTP API, the ar.inbound.v1 consumer and the outbox relay."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from arrears_ingest.auth.service import ApiKeyService
from arrears_ingest.documents import endpoints as document_endpoints
from arrears_ingest.documents.service import DocumentService
from arrears_ingest.events import endpoints as event_endpoints
from arrears_ingest.events.consumer import InboundConsumer, InboundLoop
from arrears_ingest.events.service import IngestService
from arrears_ingest.models import inbox, outbox
from arrears_ingest.settings import IngestSettings
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.http import BodySizeLimit, install_operational_routes, install_problem_handlers
from arrears_shared.messaging.kafka import make_consumer
from arrears_shared.runtime import Runtime
from arrears_shared.topics import INBOUND

SERVICE = "ingest"


def create_app(settings: IngestSettings, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox)
    service = IngestService(runtime.outbox)

    def inbound() -> InboundConsumer:
        return InboundConsumer(
            consumer=make_consumer(settings, "arrears-ingest", [INBOUND], client_id="arrears-ingest"),
            group_id="arrears-ingest",
            sessionmaker=runtime.sessionmaker,
            outbox=runtime.outbox,
            service=service,
            batch_size=settings.inbound_batch,
            after_commit=runtime.relay.wake,
        )

    if runtime.runs_consumers:
        runtime.consumer_groups["arrears-ingest"] = [INBOUND]
    for n in range(settings.inbound_consumers):
        loop = InboundLoop(inbound)
        runtime.add_loop(f"consumer:arrears-ingest:{n}", loop.run, loop.stop)
    runtime.relay.batch = settings.relay_batch
    runtime.relay.parallel = settings.relay_parallel

    app = FastAPI(title="Arrears ingest", version="1.0.0", lifespan=runtime.lifespan)
    app.state.settings = settings
    app.state.ingest_service = service
    app.state.document_service = DocumentService(service)
    app.state.api_key_service = ApiKeyService()
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_problem_handlers(app)
    install_operational_routes(app, runtime.readiness)
    if settings.role != "relay":  # a relay-only process serves probes and metrics only
        app.include_router(event_endpoints.router)
        app.include_router(document_endpoints.router)

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["CloudEventIn"] = (
                CloudEvent.model_json_schema()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
