"""Scoring's ledger throughput from Kafka: canonical events on ar.ledger.v1 through the real
consumer (inbox, recompute, summary tables, outbox) until every one is applied.

    python -m bench.scoring_ledger [--accounts 1000] [--per-account 10] [--publish-seconds 0.5]

Starts its own broker (Tansu) and embedded PostgreSQL (or uses $DATABASE_URL's server); the
outbox relay runs too, so ar.account.updated is really published. Besides the rate from the
runtime's start (consumer group join included, which alone takes seconds against Tansu) it prints
the steady rate: from the first event applied to the last (the inbox polled every 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from arrears_dev.stack import EmbeddedPostgres, create_topics, free_port, start_broker, stop_process
from arrears_scoring.app import SERVICE, create_app
from arrears_scoring.models import inbox, outbox
from arrears_scoring.settings import ScoringSettings
from arrears_shared.events.envelope import new_event
from arrears_shared.events.v1 import InvoiceIssued, PaymentReceived
from arrears_shared.migrations import upgrade
from arrears_shared.runtime import Runtime
from arrears_shared.settings import async_database_url
from arrears_shared.topics import LEDGER

MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "scoring" / "arrears_scoring" / "migrations"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def events(accounts: int, per: int) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for a in range(accounts):
        acc = f"bench-{a:06d}"
        for k in range(per):
            if k % 3 == 2:
                data: InvoiceIssued | PaymentReceived = PaymentReceived(
                    payment_id=f"{acc}-p{k}",
                    account_id=acc,
                    currency="EUR",
                    amount_minor=700 + k,
                    received_at=T0 + timedelta(days=k * 10),
                )
                type_ = "ar.payment.received"
            else:
                issue = date(2026, 1, 1) + timedelta(days=k * 10)
                data = InvoiceIssued(
                    invoice_id=f"{acc}-i{k}",
                    invoice_number=f"N{k}",
                    account_id=acc,
                    issue_date=issue,
                    due_date=issue + timedelta(days=30),
                    currency="EUR",
                    amount_minor=1000 + k,
                )
                type_ = "ar.invoice.issued"
            ev = new_event(type=type_, source="bench", subject=acc, data=data, time=T0, id=f"{acc}-{k}")
            out.append((acc.encode(), ev.to_json()))
    return out


async def run(url: str, bootstrap: str, accounts: int, per: int) -> None:
    os.environ["ARREARS_DATABASE_URL"] = url
    os.environ["ARREARS_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    settings = ScoringSettings()
    runtime = Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox)
    create_app(settings, runtime)
    msgs = events(accounts, per)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    for key, value in msgs:
        await producer.send(LEDGER, value, key=key)
    await producer.flush()
    await producer.stop()
    rss = psutil.Process()
    peak = rss.memory_info().rss
    t0 = time.perf_counter()
    await runtime.start()
    done = 0
    first: float | None = None  # when the first event was applied (the consumer group has joined)
    polls = 0
    while done < len(msgs):
        await asyncio.sleep(0.05)
        polls += 1
        if polls % 10 == 0:
            peak = max(peak, rss.memory_info().rss)
        async with runtime.sessionmaker() as session:
            done = int(await session.scalar(text("SELECT count(*) FROM scoring.inbox")) or 0)
        if done and first is None:
            first = time.perf_counter()
    elapsed = time.perf_counter() - t0
    assert first is not None
    steady = time.perf_counter() - first
    dirty = 1
    while dirty:
        await asyncio.sleep(0.2)
        peak = max(peak, rss.memory_info().rss)
        async with runtime.sessionmaker() as session:
            dirty = int(await session.scalar(text("SELECT count(*) FROM scoring.dirty_accounts")) or 0)
    published = time.perf_counter() - t0
    async with runtime.sessionmaker() as session:
        versions = int(await session.scalar(text("SELECT coalesce(sum(version), 0) FROM scoring.accounts")) or 0)
    await runtime.stop()
    print(
        f"{len(msgs)} ledger events ({accounts} accounts x {per}) applied from Kafka in {elapsed:.1f} s: "
        f"{len(msgs) / elapsed:.0f} events/s; after the group join ({first - t0:.1f} s): {done} in {steady:.2f} s, "
        f"{done / steady:.0f} events/s; every account published by {published:.1f} s "
        f"({versions} versions in all); publish period {settings.publish_seconds} s; peak RSS {peak / 2**20:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_ledger")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--per-account", type=int, default=10)
    parser.add_argument("--publish-seconds", type=float, default=None, help="ARREARS_SCORING_PUBLISH_SECONDS")
    args, _ = parser.parse_known_args()
    if args.publish_seconds is not None:
        os.environ["ARREARS_SCORING_PUBLISH_SECONDS"] = str(args.publish_seconds)
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        port = free_port()
        broker = start_broker(port, Path(tmp) / "broker.log")
        pg = EmbeddedPostgres(Path(tmp) / "pg", free_port())
        try:
            bootstrap = f"127.0.0.1:{port}"
            create_topics(bootstrap)
            pg.start()
            url = async_database_url(pg.url)
            upgrade(MIGRATIONS, url, "scoring")
            asyncio.run(run(url, bootstrap, args.accounts, args.per_account))
        finally:
            pg.stop()
            stop_process(broker)


if __name__ == "__main__":
    main()
