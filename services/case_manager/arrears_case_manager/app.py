"""The case manager's composition: account and delivery consumers, timer sweeper, case API, relay."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from arrears_case_manager.auth import KeyService
from arrears_case_manager.cases import endpoints as case_endpoints
from arrears_case_manager.cases.actions import CaseActions
from arrears_case_manager.cases.consumer import case_router
from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.cases.sweeper import Sweeper
from arrears_case_manager.models import inbox, outbox
from arrears_case_manager.policy.models import load_policy
from arrears_case_manager.settings import CaseSettings
from arrears_shared.http import install_operational_routes, install_problem_handlers
from arrears_shared.runtime import Runtime
from arrears_shared.topics import ACCOUNTS, DELIVERIES

SERVICE = "case_manager"


def create_app(settings: CaseSettings, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox)
    service = CaseService(
        runtime.outbox,
        runtime.clock,
        load_policy(settings.policy_file),
        settings.payment_link_template,
        timedelta(hours=settings.notification_ttl_hours),
    )
    # An account's updates share a partition and a delivery update only adds a timeline row, so the batches
    # of every partition of a poll are applied together (one transaction, one apply_updates call).
    runtime.add_consumer(
        "arrears-case-manager", [ACCOUNTS, DELIVERIES], case_router(service), one_transaction_per_poll=True
    )
    sweeper = Sweeper(service, runtime.sessionmaker, settings.sweep_seconds, settings.sweep_batch, runtime.relay.wake)
    runtime.add_loop("timer-sweeper", sweeper.run, sweeper.stop)

    app = FastAPI(title="Arrears case manager", version="1.0.0", lifespan=runtime.lifespan)
    app.state.settings = settings
    app.state.case_service = service
    app.state.case_actions = CaseActions(service)
    app.state.key_service = KeyService()
    install_problem_handlers(app)
    install_operational_routes(app, runtime.readiness)
    if settings.role not in ("worker", "relay"):  # the worker and relay serve probes and metrics only
        app.include_router(case_endpoints.router)
    return app
