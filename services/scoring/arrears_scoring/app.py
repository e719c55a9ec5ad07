"""Scoring's composition: ledger consumer, account API, outbox relay."""

from __future__ import annotations

from fastapi import FastAPI

from arrears_scoring.accounts import endpoints as account_endpoints
from arrears_scoring.accounts.service import AccountQueries
from arrears_scoring.ledger.consumer import ledger_router
from arrears_scoring.ledger.service import LedgerService
from arrears_scoring.models import inbox, outbox
from arrears_scoring.risk.model import RiskModel
from arrears_scoring.settings import ScoringSettings
from arrears_shared.http import install_operational_routes, install_problem_handlers
from arrears_shared.runtime import Runtime
from arrears_shared.topics import LEDGER

SERVICE = "scoring"


def create_app(settings: ScoringSettings, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox)
    model = RiskModel.default()
    ledger = LedgerService(runtime.outbox, runtime.clock, model, settings.thresholds())
    runtime.add_consumer("arrears-scoring", [LEDGER], ledger_router(ledger))

    app = FastAPI(title="Arrears scoring", version="1.0.0", lifespan=runtime.lifespan)
    app.state.settings = settings
    app.state.account_queries = AccountQueries(model)
    install_problem_handlers(app)
    install_operational_routes(app, runtime.readiness)
    app.include_router(account_endpoints.router)
    return app
