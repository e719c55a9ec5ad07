"""Scoring's composition: ledger and collections consumers, daily re-age, account API, outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from arrears_scoring.accounts import endpoints as account_endpoints
from arrears_scoring.accounts.service import AccountQueries
from arrears_scoring.ledger.consumer import collections_router, ledger_router
from arrears_scoring.ledger.publisher import AccountPublisher
from arrears_scoring.ledger.reage import Reager
from arrears_scoring.ledger.service import LedgerService
from arrears_scoring.models import inbox, outbox
from arrears_scoring.risk.model import RiskModel
from arrears_scoring.risk.repository import ModelRepository
from arrears_scoring.settings import ScoringSettings
from arrears_shared.http import install_operational_routes, install_problem_handlers
from arrears_shared.runtime import Runtime
from arrears_shared.topics import EVENTS, LEDGER

SERVICE = "scoring"
log = logging.getLogger(__name__)


class ModelRefresher:
    """Loads the active trained model from the database (at start and every minute), so a model
    fitted by ``arrears-scoring train`` is used without a restart; the default until one exists."""

    def __init__(self, runtime: Runtime, ledger: LedgerService, queries: AccountQueries, every: float) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.queries = queries
        self.every = every
        self._stop = asyncio.Event()

    async def refresh(self) -> None:
        async with self.runtime.sessionmaker() as session:
            raw = await ModelRepository().active(session)
        if raw is not None and raw.get("version") != self.ledger.model.version:
            model = RiskModel.from_dict(raw)
            self.ledger.model = model
            self.queries.model = model
            log.info("risk model %s in use", model.version)

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.refresh()
            except Exception:
                log.exception("could not load the risk model; keeping the one in use")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every)

    def stop(self) -> None:
        self._stop.set()


def create_app(settings: ScoringSettings, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox)
    model = RiskModel.default()
    ledger = LedgerService(runtime.outbox, runtime.clock, model, settings.thresholds())
    queries = AccountQueries(model)
    # The publisher drains changed accounts on a short period rather than after every consumer
    # commit, so a burst of events on one account becomes one published version.
    publisher = AccountPublisher(
        ledger, runtime.sessionmaker, poll_seconds=settings.publish_seconds, on_published=runtime.relay.wake
    )
    # An account's events all go to one partition, so the partitions of a poll never touch the
    # same account: the whole poll is applied in one transaction (one documents statement).
    runtime.add_consumer("arrears-scoring", [LEDGER], ledger_router(ledger), one_transaction_per_poll=True)
    runtime.add_consumer(
        "arrears-scoring-collections", [EVENTS], collections_router(ledger), one_transaction_per_poll=True
    )
    runtime.add_loop("account-publisher", publisher.run, publisher.stop)
    refresher = ModelRefresher(runtime, ledger, queries, settings.model_refresh_seconds)
    runtime.add_loop("model-refresh", refresher.run, refresher.stop)
    reager = Reager(ledger, runtime.sessionmaker, settings.level_offsets())

    async def reage() -> None:
        await reager.run(settings.reage_check_seconds)

    runtime.add_loop("daily-reage", reage, reager.stop)

    app = FastAPI(title="Arrears scoring", version="1.0.0", lifespan=runtime.lifespan)
    app.state.settings = settings
    app.state.account_queries = queries
    app.state.reager = reager
    install_problem_handlers(app)
    install_operational_routes(app, runtime.readiness)
    if settings.role != "relay":  # a relay-only process serves probes and metrics only
        app.include_router(account_endpoints.router)
    return app
