"""Annotated dependencies for the notifier's endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_notifier.deliveries.service import DeliveryService
from arrears_notifier.settings import NotifierSettings
from arrears_notifier.templates.service import TemplateService
from arrears_shared.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    runtime = _runtime(request)
    async with runtime.sessionmaker() as session, session.begin():
        yield session
    runtime.relay.wake()  # publish the delivery updates the request wrote to the outbox


def _delivery_service(request: Request) -> DeliveryService:
    service: DeliveryService = request.app.state.delivery_service
    return service


def _template_service(request: Request) -> TemplateService:
    service: TemplateService = request.app.state.template_service
    return service


def _settings(request: Request) -> NotifierSettings:
    settings: NotifierSettings = request.app.state.settings
    return settings


SessionDep = Annotated[AsyncSession, Depends(_session)]
DeliveryServiceDep = Annotated[DeliveryService, Depends(_delivery_service)]
TemplateServiceDep = Annotated[TemplateService, Depends(_template_service)]
SettingsDep = Annotated[NotifierSettings, Depends(_settings)]
