"""Annotated dependencies for the case manager's endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

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


SessionDep = Annotated[AsyncSession, Depends(_session)]
CaseServiceDep = Annotated[CaseService, Depends(_service)]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
