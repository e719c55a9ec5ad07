"""The account publisher's CPU per published account, alone: no broker, no consumer, no relay.

Stores the documents of ``bench.scoring_ledger``'s events (``--accounts`` × ``--per-account``:
invoices and payments) through the consumer's bulk path, then publishes every account
``--rounds`` times through the real bulk path the publisher drains with
(``LedgerService.publish_many``: load, compute, score, summary tables, outbox rows), ``--batch``
accounts per transaction. Nothing else runs in the process, so its CPU time
(``time.process_time``) over the publishing is the publisher's own (PostgreSQL's backend is apart).

    python -m bench.scoring_publish [--accounts 3000] [--per-account 10] [--rounds 3] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from arrears_dev.stack import EmbeddedPostgres, free_port
from arrears_scoring.ledger.service import LedgerService
from arrears_scoring.models import outbox
from arrears_scoring.risk.model import RiskModel
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_engine, make_sessionmaker
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.events.v1 import parse_data
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.migrations import upgrade
from arrears_shared.runtime import tune_gc
from arrears_shared.settings import async_database_url
from bench.scoring_ledger import MIGRATIONS, events

NOW = datetime(2026, 6, 1, 6, tzinfo=UTC)


async def run(url: str, accounts: int, per: int, rounds: int, batch: int) -> None:
    engine = make_engine(url, pool_size=2, application_name="bench-publish")
    sessionmaker = make_sessionmaker(engine)
    ledger = LedgerService(Outbox(outbox), FixedClock(NOW), RiskModel.default(), (0.25, 0.5, 0.75))
    items = []
    for _key, value in events(accounts, per):
        event = CloudEvent.model_validate(orjson.loads(value))
        items.append((event, parse_data(event)))
    for start in range(0, len(items), 2000):
        async with sessionmaker() as session, session.begin():
            await ledger.apply_many(session, items[start : start + 2000])
    ids = [f"bench-{a:06d}" for a in range(accounts)]
    tune_gc()  # as a deployed service's runtime does after start-up
    for r in range(rounds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for start in range(0, len(ids), batch):
            async with sessionmaker() as session, session.begin():
                await ledger.publish_many(session, ids[start : start + batch])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(
            f"round {r + 1}: {accounts} accounts published in {wall:.2f} s; publisher CPU {cpu:.2f} s = "
            f"{cpu / accounts * 1000:.3f} ms per account; load {os.getloadavg()[0]:.1f}"
        )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_publish")
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--per-account", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", free_port())
        pg.start()
        try:
            url = async_database_url(pg.url)
            upgrade(MIGRATIONS, url, "scoring")
            asyncio.run(run(url, args.accounts, args.per_account, args.rounds, args.batch))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
