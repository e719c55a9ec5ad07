"""Scoring's daily re-age at scale: 1,000,000 open invoices in 100,000 accounts.

Seeds scoring.documents with SQL, publishes every account once as of yesterday through the real
bulk path (LedgerService.publish_many), then moves the clock to today and times Reager.run_once:
the set-based detection statement, then the republish of only the accounts that changed.
Reports times, how many accounts changed and the peak RSS of this process during the re-age.

    python -m bench.scoring_reage [--accounts 100000] [--per-account 10]

Uses $DATABASE_URL's server when set (a throw-away database is created), else an embedded
PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy import text

from arrears_dev.stack import EmbeddedPostgres, create_database, drop_database, free_port, with_database
from arrears_scoring.ledger.reage import Reager
from arrears_scoring.ledger.service import LedgerService
from arrears_scoring.models import outbox
from arrears_scoring.risk.model import RiskModel
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_engine, make_sessionmaker
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.migrations import upgrade
from arrears_shared.settings import async_database_url

TODAY = date(2026, 6, 1)
MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "scoring" / "arrears_scoring" / "migrations"

SEED = """
INSERT INTO scoring.documents (account_id, kind, doc_id, data, at, event_id)
SELECT acc, 'invoice', inv,
       jsonb_build_object('invoice_id', inv, 'invoice_number', 'N' || k, 'account_id', acc,
                          'issue_date', (due - 30)::text, 'due_date', due::text, 'currency', 'EUR',
                          'amount_minor', 1000 + (a * k) % 50000),
       TIMESTAMPTZ '2026-01-01 00:00:00+00', 'seed'
FROM generate_series(1, :accounts) a
CROSS JOIN generate_series(1, :per) k
CROSS JOIN LATERAL (
    SELECT 'acc-' || lpad(a::text, 7, '0') AS acc,
           'inv-' || a || '-' || k AS inv,
           DATE '2026-06-01' + 30 - ((a * 7 + k * 13) % 150) AS due
) d
"""


class PeakRss:
    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def run(url: str, accounts: int, per: int) -> None:
    engine = make_engine(url, pool_size=2, application_name="bench-reage")
    sessionmaker = make_sessionmaker(engine)
    clock = FixedClock(datetime.combine(TODAY - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=6))
    ledger = LedgerService(Outbox(outbox), clock, RiskModel.default(), (0.25, 0.5, 0.75))
    t0 = time.perf_counter()
    async with sessionmaker() as session, session.begin():
        await session.execute(text(SEED), {"accounts": accounts, "per": per})
    t_seed = time.perf_counter() - t0
    ids = [f"acc-{a:07d}" for a in range(1, accounts + 1)]
    t0 = time.perf_counter()
    for start in range(0, len(ids), 1000):
        async with sessionmaker() as session, session.begin():
            await ledger.publish_many(session, ids[start : start + 1000])
    t_publish = time.perf_counter() - t0
    async with sessionmaker() as session, session.begin():
        await session.execute(text("TRUNCATE scoring.outbox"))
        await session.execute(text("ANALYZE scoring.open_items"))
        await session.execute(text("ANALYZE scoring.accounts"))
        await session.execute(text("ANALYZE scoring.documents"))
        n_items = await session.scalar(text("SELECT count(*) FROM scoring.open_items"))
    print(f"seeded {accounts} accounts, {n_items} open invoices: SQL {t_seed:.1f} s; first publish {t_publish:.1f} s")

    clock.set(clock.now() + timedelta(days=1))
    reager = Reager(ledger, sessionmaker)
    async with sessionmaker() as session:
        t0 = time.perf_counter()
        changed = await reager.changed(session, TODAY)
        t_detect = time.perf_counter() - t0
    rss0 = psutil.Process().memory_info().rss
    with PeakRss() as rss:
        t0 = time.perf_counter()
        published = await reager.run_once()
        t_total = time.perf_counter() - t0
    async with sessionmaker() as session:
        events = await session.scalar(text("SELECT count(*) FROM scoring.outbox"))
    print(
        f"re-age as of {TODAY}: detection (set-based SQL) {t_detect:.1f} s; "
        f"run_once (detection + republish) {t_total:.1f} s; "
        f"{len(changed)} of {accounts} accounts changed, {published} published, {events} events in the outbox; "
        f"RSS before {rss0 / 2**20:.0f} MiB, peak during re-age {rss.peak / 2**20:.0f} MiB"
    )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_reage")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--per-account", type=int, default=10)
    args, _ = parser.parse_known_args()
    print(f"load: {os.getloadavg()}")
    given = os.environ.get("DATABASE_URL")
    if given:
        admin = with_database(given, "postgres")
        name = f"bench_reage_{uuid.uuid4().hex[:8]}"
        create_database(admin, name)
        try:
            url = async_database_url(with_database(admin, name))
            upgrade(MIGRATIONS, url, "scoring")
            asyncio.run(run(url, args.accounts, args.per_account))
        finally:
            drop_database(admin, name)
        return
    with tempfile.TemporaryDirectory(prefix="bench-reage-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", free_port())
        pg.start()
        try:
            url = async_database_url(pg.url)
            upgrade(MIGRATIONS, url, "scoring")
            asyncio.run(run(url, args.accounts, args.per_account))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
