"""FastAPI dependencies every service shares; each service's ``deps.py`` names its own with these."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_shared.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for reads (and for writes that commit explicitly)."""
    async with runtime_of(request).sessionmaker() as session:
        yield session


async def write_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session in a transaction committed when the endpoint returns; the outbox relay is woken after."""
    runtime = runtime_of(request)
    async with runtime.sessionmaker() as session, session.begin():
        yield session
    runtime.relay.wake()


def from_state(name: str) -> Callable[[Request], Any]:
    """A dependency returning ``app.state.<name>`` (services, settings: built once in ``create_app``)."""

    def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = f"state_{name}"
    return dependency


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
ReadSessionDep = Annotated[AsyncSession, Depends(read_session)]
WriteSessionDep = Annotated[AsyncSession, Depends(write_session)]
