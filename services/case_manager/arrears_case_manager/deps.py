"""Annotated dependencies for the case manager's endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException

from arrears_case_manager.auth import KeyService, Principal
from arrears_case_manager.cases.actions import CaseActions
from arrears_case_manager.cases.service import CaseService
from arrears_shared.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _runtime(request).sessionmaker() as session:
        yield session


def _service(request: Request) -> CaseService:
    service: CaseService = request.app.state.case_service
    return service


def _actions(request: Request) -> CaseActions:
    actions: CaseActions = request.app.state.case_actions
    return actions


SessionDep = Annotated[AsyncSession, Depends(_session)]
CaseServiceDep = Annotated[CaseService, Depends(_service)]
CaseActionsDep = Annotated[CaseActions, Depends(_actions)]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
_BEARER = {"WWW-Authenticate": 'Bearer realm="arrears-cases"'}
ANONYMOUS = Principal(key_id="anonymous", scopes=frozenset({"admin"}))


def _require(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer API key")] = None,
    ) -> Principal:
        if not request.app.state.settings.auth_required:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "a bearer API key is required (Authorization: Bearer ak_...)", headers=_BEARER)
        keys: KeyService = request.app.state.key_service
        async with _runtime(request).sessionmaker() as session:
            principal = await keys.authenticate(session, token.strip())
        if principal is None:
            raise HTTPException(401, "the API key is unknown or revoked", headers=_BEARER)
        if not principal.allows(scope):
            raise HTTPException(403, f"this API key lacks the {scope} scope")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(_require("cases:read"))]
Writer = Annotated[Principal, Depends(_require("cases:write"))]
IfMatch = Annotated[
    str | None, Header(description="The ETag of the case as last read; a stale one is refused with 412.")
]
IdempotencyKey = Annotated[
    str | None,
    Header(max_length=255, description="Repeat a POST with the same key to get the first answer, not a second effect."),
]
