"""Notifier throughput: emails to the local SMTP sink and SMS to the local Twilio-compatible HTTP
provider, through the real dispatch path (claim with SKIP LOCKED, contact rules, sending committed
before each provider call, outcome and delivery event recorded after it) on a real PostgreSQL.

    python -m bench.notifier [--emails 3000] [--sms 5000] [--concurrency 64] [--smtp-pool 8]
                             [--sms-connections 16] [--processes 1] [--profile DIR]

The sinks run as their own processes (aiosmtpd storing .eml files; the uvicorn SMS sink appending
to a JSONL file), as in `arrears up`. The database is $DATABASE_URL's server or an embedded
PostgreSQL. ``--processes N`` runs N dispatcher processes on the same table, as N replicas would
(the claim is safe across them). Prints messages/s per channel, the CPU time per message of the
notifier processes, of each sink and (embedded only) of PostgreSQL, the load average beside each
figure, and the peak RSS of the notifier processes. ``--profile DIR`` writes a cProfile file per
dispatcher process and channel.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import psutil
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
from arrears_shared.runtime import tune_gc
from arrears_shared.settings import async_database_url
from bench.measure import postmaster, tree_cpu


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


@dataclass(frozen=True)
class Job:
    url: str
    smtp_port: int
    sms_port: int
    concurrency: int
    pool: int
    sms_connections: int
    profile: str | None


async def dispatch(job: Job) -> None:
    settings = NotifierSettings(
        database_url=job.url,
        ARREARS_SMTP_PORT=job.smtp_port,
        ARREARS_SMS_API_BASE=f"http://127.0.0.1:{job.sms_port}",
        ARREARS_SMTP_POOL_SIZE=job.pool,
        ARREARS_SMS_MAX_CONNECTIONS=job.sms_connections,
    )
    engine = make_engine(async_database_url(job.url), pool_size=job.concurrency + 5)
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
    dispatcher = Dispatcher(service, sessionmaker, concurrency=job.concurrency, poll_seconds=0.05)
    # As the service's Runtime.lifespan does once it has started (the dispatcher runs inside it).
    tune_gc()
    await dispatcher.run(until_idle=True)
    for ch in channels.values():
        await ch.close()
    await engine.dispose()


def worker(job: Job, index: int, channel: str, go: EventType, results: Any) -> None:
    """One dispatcher process: waits for ``go`` (so that start-up is not measured), runs until
    nothing is due, and reports its CPU time and peak RSS."""
    go.wait()
    cpu0 = time.process_time()
    # CPU time as the clock: on a shared machine wall time mostly measures the other processes.
    profiler = cProfile.Profile(time.process_time) if job.profile else None
    if profiler is not None:
        profiler.enable()
    asyncio.run(dispatch(job))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(Path(job.profile or ".") / f"notifier-{channel}-{index}.prof"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put((index, time.process_time() - cpu0, rss, time.perf_counter()))


@dataclass
class Figures:
    rate: float
    notifier_cpu_ms: float
    sink_cpu_ms: float
    db_cpu_ms: float
    rss_mb: float
    load: tuple[float, float, float]


def run_channel(
    job: Job, channel: str, n: int, processes: int, sink: psutil.Process, db: psutil.Process | None
) -> Figures:
    async def insert_rows() -> None:
        engine = make_engine(async_database_url(job.url), pool_size=2)
        batch = rows(channel, n, datetime.now(UTC))
        async with make_sessionmaker(engine)() as session, session.begin():
            for i in range(0, n, 1000):
                await session.execute(insert(notifications), batch[i : i + 1000])
        await engine.dispose()

    async def count_sent() -> int:
        engine = make_engine(async_database_url(job.url), pool_size=2)
        async with make_sessionmaker(engine)() as session:
            sent = await session.scalar(
                select(func.count()).where(notifications.c.channel == channel, notifications.c.status == "sent")
            )
        await engine.dispose()
        return int(sent or 0)

    asyncio.run(insert_rows())
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(job, i, channel, go, results)) for i in range(processes)]
    for p in procs:
        p.start()
    time.sleep(3.0)  # imports and start-up, not measured
    load = os.getloadavg()
    sink0, db0 = tree_cpu(sink), tree_cpu(db)
    start = time.perf_counter()
    go.set()
    reports = [results.get(timeout=600) for _ in procs]
    elapsed = max(r[3] for r in reports) - start
    sink1, db1 = tree_cpu(sink), tree_cpu(db)
    for p in procs:
        p.join(30)
    sent = asyncio.run(count_sent())
    if sent != n:
        raise SystemExit(f"only {sent} of {n} {channel} messages were sent")
    return Figures(
        rate=n / elapsed,
        notifier_cpu_ms=1000 * sum(r[1] for r in reports) / n,
        sink_cpu_ms=1000 * (sink1 - sink0) / n,
        db_cpu_ms=1000 * (db1 - db0) / n,
        rss_mb=max(r[2] for r in reports),
        load=load,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--sms", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64, help="dispatcher concurrency per process (bounded)")
    parser.add_argument("--smtp-pool", type=int, default=8, help="SMTP connections per process")
    parser.add_argument("--sms-connections", type=int, default=16, help="HTTP connections per process (SMS)")
    parser.add_argument("--processes", type=int, default=1, help="dispatcher processes (replicas)")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile files into this directory")
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["notifier"] else sys.argv[1:])
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

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
        job = Job(
            url,
            ports.smtp,
            ports.sms,
            args.concurrency,
            args.smtp_pool,
            args.sms_connections,
            str(args.profile) if args.profile else None,
        )
        try:
            db = postmaster(pg)
            smtp_sink, sms_sink = psutil.Process(sinks[0].pid), psutil.Process(sinks[1].pid)
            out = []
            if args.emails:
                f = run_channel(job, "email", args.emails, args.processes, smtp_sink, db)
                out.append(("email", args.emails, "SMTP sink", f))
            if args.sms:
                f = run_channel(job, "sms", args.sms, args.processes, sms_sink, db)
                out.append(("sms", args.sms, "HTTP provider", f))
            print(f"cpus: {os.cpu_count()}, dispatcher processes: {args.processes}")
            for channel, n, where, f in out:
                print(
                    f"{channel:5}: {n} to the {where} at {f.rate:,.0f}/s "
                    f"(load {f.load[0]:.2f} {f.load[1]:.2f} {f.load[2]:.2f}); CPU per message: "
                    f"notifier {f.notifier_cpu_ms:.2f} ms, sink {f.sink_cpu_ms:.2f} ms, "
                    f"PostgreSQL {f.db_cpu_ms:.2f} ms; peak RSS per notifier process {f.rss_mb:.0f} MB"
                )
            print(
                f"command: python -m bench.notifier --emails {args.emails} --sms {args.sms} "
                f"--concurrency {args.concurrency} --smtp-pool {args.smtp_pool} "
                f"--sms-connections {args.sms_connections} --processes {args.processes}"
            )
        finally:
            for proc in sinks:
                stop_process(proc)
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
