"""Annotated dependencies for the case manager's endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.exceptions import HTTPException

from arrears_case_manager.auth import KeyService, Principal
from arrears_case_manager.cases.actions import CaseActions
from arrears_case_manager.cases.service import CaseService
from arrears_shared.deps import ReadSessionDep, from_state, runtime_of

SessionDep = ReadSessionDep
CaseServiceDep = Annotated[CaseService, Depends(from_state("case_service"))]
CaseActionsDep = Annotated[CaseActions, Depends(from_state("case_actions"))]
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
        async with runtime_of(request).sessionmaker() as session:
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
