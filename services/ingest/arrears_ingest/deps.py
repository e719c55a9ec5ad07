"""Annotated dependencies for ingest's endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from arrears_ingest.documents.service import DocumentService
from arrears_ingest.events.service import IngestService
from arrears_ingest.settings import IngestSettings
from arrears_shared.deps import RuntimeDep, from_state

IngestServiceDep = Annotated[IngestService, Depends(from_state("ingest_service"))]
SettingsDep = Annotated[IngestSettings, Depends(from_state("settings"))]
DocumentServiceDep = Annotated[DocumentService, Depends(from_state("document_service"))]

__all__ = ["DocumentServiceDep", "IngestServiceDep", "RuntimeDep", "SettingsDep"]
