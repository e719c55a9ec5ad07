"""The FastAPI dependency that authenticates every /v1 request of ingest."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from arrears_ingest.auth.service import ApiKeyService, AuthError, Caller
from arrears_ingest.settings import IngestSettings
from arrears_shared.http import Problem
from arrears_shared.runtime import Runtime


async def authenticate(request: Request) -> Caller:
    settings: IngestSettings = request.app.state.settings
    if not settings.auth_required:
        return Caller(None, None)
    runtime: Runtime = request.app.state.runtime
    service: ApiKeyService = request.app.state.api_key_service
    authorization = request.headers.get("authorization", "")
    api_key = request.headers.get("x-api-key") or (
        authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
    )
    signature = request.headers.get("x-arrears-signature")
    body = await request.body() if signature else b""
    try:
        async with runtime.sessionmaker() as session:
            return await service.authenticate(
                session,
                api_key=api_key,
                key_id_header=request.headers.get("x-arrears-key-id"),
                signature=signature,
                body=body,
                now=runtime.clock.now(),
                tolerance=settings.signature_tolerance_seconds,
            )
    except AuthError as exc:
        raise Problem(
            401, "Unauthorized", str(exc), type="unauthorized", headers={"WWW-Authenticate": "Bearer"}
        ) from None


CallerDep = Annotated[Caller, Depends(authenticate)]
