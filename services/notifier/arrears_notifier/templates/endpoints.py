"""GET /v1/templates and POST /v1/templates/{name}/preview."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from arrears_notifier.deps import TemplateServiceDep
from arrears_notifier.templates.service import PreviewRequest

router = APIRouter(prefix="/v1", tags=["templates"])


@router.get("/templates")
async def list_templates(service: TemplateServiceDep) -> dict[str, Any]:
    return {"items": service.catalog()}


@router.post("/templates/{name}/preview")
async def preview_template(
    name: str, body: PreviewRequest, service: TemplateServiceDep, request: Request
) -> dict[str, Any]:
    today = request.app.state.runtime.clock.now().date()
    return service.preview(name, body, today)
