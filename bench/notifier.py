"""Notifier throughput: emails to the local SMTP sink and SMS to the local Twilio-compatible HTTP
provider, through the real dispatch path (claim with SKIP LOCKED, contact rules, sending committed
before each provider call, outcome and delivery event recorded after it) on a real PostgreSQL.

    python -m bench.notifier [--emails 3000] [--sms 5000] [--concurrency 100] [--smtp-pool 8]

The sinks run as their own processes (aiosmtpd storing .eml files; the uvicorn SMS sink appending
to a JSONL file), as in `arrears up`. The database is $DATABASE_URL's server or an embedded
PostgreSQL. Prints messages/s per channel and the benchmark process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from arrears_dev.stack import (
    EmbeddedPostgres,
    StackPorts,
    create_database,
    free_port,
    start_sinks,
    stop_process,
    with_database,
)
from arrears_notifier.app import build_channels
from arrears_notifier.deliveries.service import ContactRules, DeliveryService, Dispatcher, LinkSigner
from arrears_notifier.models import notifications, outbox
from arrears_notifier.settings import NotifierSettings
from arrears_notifier.templates.render import Renderer
from arrears_shared.clock import SystemClock
from arrears_shared.db import make_engine, make_sessionmaker
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.settings import async_database_url


def rows(channel: str, n: int, now: datetime) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        account = f"BENCH-{uuid.uuid4().hex[:12]}"
        recipient: dict[str, Any] = {"timezone": "Etc/UTC"}
        if channel == "sms":
            recipient["phone"] = f"+4916{i:09d}"
        else:
            recipient["email"] = f"bench-{i}@example.com"
        out.append(
            {
                "notification_id": f"{account}:{channel}",
                "case_id": f"CASE-{account}",
                "account_id": account,
                "channel": channel,
                "template": "overdue_polite",
                "locale": "en",
                "recipient": recipient,
                "variables": {
                    "customer_name": "Bench Customer",
                    "invoices": [{"number": f"INV-{i}", "open": "€1,234.50", "due_date": "2026-01-10"}],
                    "total_due": "€1,234.50",
                    "max_days_past_due": 10,
                    "deadline": "2026-02-01",
                    "payment_link": f"https://pay.example.com/{account}",
                },
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    return out


async def run_channel(url: str, ports: StackPorts, channel: str, n: int, concurrency: int, pool: int) -> float:
    settings = NotifierSettings(
        database_url=url,
        ARREARS_SMTP_PORT=ports.smtp,
        ARREARS_SMS_API_BASE=f"http://127.0.0.1:{ports.sms}",
        ARREARS_SMTP_POOL_SIZE=pool,
    )
    engine = make_engine(async_database_url(url), pool_size=concurrency + 5)
    sessionmaker = make_sessionmaker(engine)
    channels = build_channels(settings)
    service = DeliveryService(
        outbox=Outbox(outbox),
        clock=SystemClock(),
        renderer=Renderer(),
        channels=channels,
        rules=ContactRules(0, 24, 10, 6),  # the window and the cap are not what is measured here
        signer=LinkSigner("bench"),
        public_base_url="http://127.0.0.1:8004",
    )
    dispatcher = Dispatcher(service, sessionmaker, concurrency=concurrency, poll_seconds=0.05)
    batch = rows(channel, n, datetime.now(UTC))
    async with sessionmaker() as session, session.begin():
        for i in range(0, n, 1000):
            await session.execute(insert(notifications), batch[i : i + 1000])
    start = time.perf_counter()
    await dispatcher.run(until_idle=True)
    elapsed = time.perf_counter() - start
    async with sessionmaker() as session:
        sent = await session.scalar(
            select(func.count()).where(notifications.c.channel == channel, notifications.c.status == "sent")
        )
    for ch in channels.values():
        await ch.close()
    await engine.dispose()
    if sent != n:
        raise SystemExit(f"only {sent} of {n} {channel} messages were sent")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--sms", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64, help="dispatcher concurrency (bounded)")
    parser.add_argument("--smtp-pool", type=int, default=8, help="SMTP connections")
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["notifier"] else sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="arrears-bench-") as tmp:
        var = Path(tmp)
        pg: EmbeddedPostgres | None = None
        given = os.environ.get("DATABASE_URL")
        if given:
            admin = with_database(given, "postgres")
        else:
            pg = EmbeddedPostgres(var / "postgres", free_port())
            pg.start()
            admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        name = f"arrears_bench_{uuid.uuid4().hex[:8]}"
        create_database(admin, name)
        url = with_database(admin, name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARREARS_")}
        env["ARREARS_DATABASE_URL"] = url
        subprocess.run(
            [sys.executable, "-m", "arrears_notifier.main", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL
        )
        ports = StackPorts(smtp=free_port(), sms=free_port())
        sinks = start_sinks(ports, var)
        try:
            load = os.getloadavg()
            email_rate = asyncio.run(run_channel(url, ports, "email", args.emails, args.concurrency, args.smtp_pool))
            sms_rate = asyncio.run(run_channel(url, ports, "sms", args.sms, args.concurrency, args.smtp_pool))
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (cpus: {os.cpu_count()})")
            print(f"email: {args.emails} to the SMTP sink at {email_rate:,.0f}/s (pool {args.smtp_pool})")
            print(f"sms:   {args.sms} to the HTTP provider at {sms_rate:,.0f}/s (concurrency {args.concurrency})")
            print(f"peak RSS of the notifier process: {rss_mb:.0f} MB")
            print(
                f"command: python -m bench.notifier --emails {args.emails} --sms {args.sms} "
                f"--concurrency {args.concurrency} --smtp-pool {args.smtp_pool}"
            )
        finally:
            for proc in sinks:
                stop_process(proc)
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
