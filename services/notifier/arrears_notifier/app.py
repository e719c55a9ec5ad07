"""The notifier's composition: request consumer, dispatcher, channels, webhooks, relay."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI

from arrears_notifier.channels.base import Channel
from arrears_notifier.channels.breaker import BreakingChannel, CircuitBreaker
from arrears_notifier.channels.email import SmtpChannel
from arrears_notifier.channels.sms import TwilioSmsChannel
from arrears_notifier.deliveries.consumer import case_router, notification_router
from arrears_notifier.deliveries.service import ContactRules, DeliveryService, Dispatcher, LinkSigner
from arrears_notifier.models import inbox, outbox
from arrears_notifier.settings import NotifierSettings
from arrears_notifier.templates.endpoints import router as templates_router
from arrears_notifier.templates.render import Renderer
from arrears_notifier.templates.service import TemplateService
from arrears_notifier.webhooks.endpoints import router as webhooks_router
from arrears_shared.http import install_operational_routes, install_problem_handlers
from arrears_shared.runtime import Runtime
from arrears_shared.topics import EVENTS, NOTIFICATIONS

SERVICE = "notifier"


def build_channels(settings: NotifierSettings) -> dict[str, Channel]:
    """The providers, each behind its own circuit breaker."""
    providers: list[Channel] = [
        SmtpChannel(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.mail_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
            pool_size=settings.smtp_pool_size,
            lookup_url=settings.smtp_lookup_url,
        ),
        TwilioSmsChannel(
            api_base=settings.sms_api_base,
            account_sid=settings.sms_account_sid,
            auth_token=settings.sms_auth_token,
            sender=settings.sms_from,
            status_callback=f"{settings.public_base_url.rstrip('/')}/v1/webhooks/sms/status",
            timeout=settings.sms_timeout_seconds,
            max_connections=settings.sms_max_connections,
        ),
    ]
    return {
        p.name: BreakingChannel(p, CircuitBreaker(settings.breaker_threshold, settings.breaker_cool_down_seconds))
        for p in providers
    }


def create_app(settings: NotifierSettings, runtime: Runtime | None = None) -> FastAPI:
    # httpx logs every request URL at INFO; the SMS provider's URLs carry phone numbers.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    runtime = runtime or Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox)
    channels = build_channels(settings)
    renderer = Renderer()
    service = DeliveryService(
        outbox=runtime.outbox,
        clock=runtime.clock,
        renderer=renderer,
        channels=channels,
        rules=ContactRules(
            settings.window_start_hour,
            settings.window_end_hour,
            settings.cap_per_7_days,
            settings.max_attempts,
            frozenset(t.strip() for t in settings.after_close_templates.split(",") if t.strip()),
        ),
        signer=LinkSigner(settings.link_secret),
        public_base_url=settings.public_base_url,
    )
    dispatcher = Dispatcher(
        service,
        runtime.sessionmaker,
        concurrency=settings.dispatch_concurrency,
        poll_seconds=settings.dispatch_poll_seconds,
        on_commit=runtime.relay.wake,
        stale_after=timedelta(seconds=settings.stale_sending_seconds),
    )
    runtime.add_consumer("arrears-notifier", [NOTIFICATIONS], notification_router(service), dispatcher.wake)
    # Not in DESIGN.md's table: the notifier also reads collections.events.v1 so that nothing is
    # sent for a case that is resolved or written off (docs/notifier.md).
    runtime.add_consumer("arrears-notifier-cases", [EVENTS], case_router(service))

    async def close_channels() -> None:
        await dispatcher.run()
        for channel in channels.values():
            await channel.close()

    runtime.add_loop("dispatcher", close_channels, dispatcher.stop)

    app = FastAPI(title="Arrears notifier", version="1.0.0", lifespan=runtime.lifespan)
    app.state.settings = settings
    app.state.delivery_service = service
    app.state.template_service = TemplateService(renderer)
    install_problem_handlers(app)
    install_operational_routes(app, runtime.readiness)
    if settings.role != "relay":  # a relay-only process serves probes and metrics only
        app.include_router(templates_router)
        app.include_router(webhooks_router)
    return app
