"""Annotated dependencies for the notifier's endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from arrears_notifier.deliveries.service import DeliveryService
from arrears_notifier.settings import NotifierSettings
from arrears_notifier.templates.service import TemplateService
from arrears_shared.deps import WriteSessionDep, from_state

SessionDep = WriteSessionDep  # webhooks write delivery updates to the outbox
DeliveryServiceDep = Annotated[DeliveryService, Depends(from_state("delivery_service"))]
TemplateServiceDep = Annotated[TemplateService, Depends(from_state("template_service"))]
SettingsDep = Annotated[NotifierSettings, Depends(from_state("settings"))]
