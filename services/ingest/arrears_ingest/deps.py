"""Annotated dependencies for ingest's endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from arrears_ingest.documents.service import DocumentService
from arrears_ingest.events.service import IngestService
from arrears_ingest.settings import IngestSettings
from arrears_shared.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest_service
    return service


def _documents(request: Request) -> DocumentService:
    service: DocumentService = request.app.state.document_service
    return service


def _settings(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
IngestServiceDep = Annotated[IngestService, Depends(_service)]
SettingsDep = Annotated[IngestSettings, Depends(_settings)]
DocumentServiceDep = Annotated[DocumentService, Depends(_documents)]
