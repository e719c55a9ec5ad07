"""What ``arrears-scoring train`` and ``reage`` run, outside the served app."""

from __future__ import annotations

from pathlib import Path

from arrears_scoring.ledger.compute import compute
from arrears_scoring.ledger.reage import Reager
from arrears_scoring.ledger.repository import LedgerRepository
from arrears_scoring.ledger.service import LedgerService, training_records
from arrears_scoring.models import outbox
from arrears_scoring.risk.features import Record
from arrears_scoring.risk.model import RiskModel
from arrears_scoring.risk.repository import ModelRepository
from arrears_scoring.risk.train import read_ibm_csv, train_all
from arrears_scoring.settings import ScoringSettings
from arrears_shared.clock import make_clock
from arrears_shared.db import make_engine, make_sessionmaker
from arrears_shared.messaging.outbox import Outbox


async def run_train(settings: ScoringSettings, csv: Path | None, activate: bool) -> RiskModel:
    clock = make_clock(settings.clock_file)
    now = clock.now()
    engine = make_engine(settings.database_url, pool_size=2, application_name="arrears-scoring-train")
    sessionmaker = make_sessionmaker(engine)
    try:
        records: list[Record] = []
        source = "csv"
        if csv is not None:
            records = read_ibm_csv(csv)
        else:
            source = "ledger"
            async with sessionmaker() as session:
                async for account_id, _, docs in LedgerRepository().all_accounts(session):
                    records += training_records(account_id, docs, compute(docs, now.date()))
        model = train_all(records, f"{source}-{now:%Y%m%dT%H%M%SZ}")
        if activate:
            async with sessionmaker() as session, session.begin():
                await ModelRepository().save(session, model.as_dict(), now)
        return model
    finally:
        await engine.dispose()


async def run_reage(settings: ScoringSettings) -> int:
    engine = make_engine(settings.database_url, pool_size=2, application_name="arrears-scoring-reage")
    sessionmaker = make_sessionmaker(engine)
    try:
        async with sessionmaker() as session:
            raw = await ModelRepository().active(session)
        model = RiskModel.from_dict(raw) if raw else RiskModel.default()
        ledger = LedgerService(Outbox(outbox), make_clock(settings.clock_file), model, settings.thresholds())
        return await Reager(ledger, sessionmaker, settings.level_offsets()).run_once()
    finally:
        await engine.dispose()
