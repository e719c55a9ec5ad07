"""Scoring's ledger throughput from Kafka: canonical events on ar.ledger.v1 through the real
consumer (inbox, documents, dirty marks), the account publisher (recompute, summary tables,
outbox) and the outbox relay (ar.account.updated really published), until every event is applied
and every changed account published.

    python -m bench.scoring_ledger [--accounts 3000] [--per-account 10] [--replicas 1]
                                   [--publish-seconds 0.5] [--batch N] [--profile-dir DIR]

Starts its own broker (Tansu) and embedded PostgreSQL, produces every event first, then starts
``--replicas`` scoring worker processes (each a whole scoring runtime, as a Deployment replica
would be; they share the consumer group and split its 12 partitions). Tansu's consumer group
join alone takes ~15 s, so the headline rate is measured **from the first event applied to the
last**: from the earliest inbox ``processed_at`` (the start of the first transaction that applied
an event) to the moment this process saw the last one committed (the inbox is polled every
50 ms). Beside it: CPU seconds per 1,000 events of the scoring processes and of PostgreSQL's
backends over that window (the machine is shared, so CPU per event is the steadier figure), the
peak RSS of each scoring process, and when every account was published. ``--profile-dir`` writes
a cProfile of each worker (``replica-N.prof``), ``--py-spy-dir`` py-spy's collapsed stacks of each
(``replica-N.txt``; py-spy is not a dependency: install it apart); ``--batch`` sets ARREARS_KAFKA_CONSUMER_BATCH.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from arrears_dev.stack import EmbeddedPostgres, create_topics, free_port, start_broker, stop_process
from arrears_shared.db import make_engine, make_sessionmaker
from arrears_shared.events.envelope import new_event
from arrears_shared.events.v1 import InvoiceIssued, PaymentReceived
from arrears_shared.migrations import upgrade
from arrears_shared.settings import async_database_url
from arrears_shared.topics import LEDGER
from bench.measure import postmaster, tree_cpu

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "services" / "scoring" / "arrears_scoring" / "migrations"
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


# --------------------------------------------------------------------------- worker (one replica)


async def _worker(profile: str | None) -> None:
    from arrears_scoring.app import SERVICE, create_app
    from arrears_scoring.models import inbox, outbox
    from arrears_scoring.settings import ScoringSettings
    from arrears_shared.runtime import Runtime, tune_gc

    settings = ScoringSettings()
    runtime = Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox)
    create_app(settings, runtime)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    await runtime.start()
    tune_gc()  # as Runtime.lifespan does after start in a deployed service
    await stop.wait()
    await runtime.stop()
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile)


# --------------------------------------------------------------------------- driver


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def produce(bootstrap: str, msgs: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    for key, value in msgs:
        await producer.send(LEDGER, value, key=key)
    await producer.flush()
    await producer.stop()


def spawn(
    url: str, bootstrap: str, args: argparse.Namespace
) -> tuple[list[subprocess.Popen[bytes]], list[subprocess.Popen[bytes]]]:
    """The scoring replicas (and, with --py-spy-dir, a py-spy sampling each)."""
    env = dict(os.environ, ARREARS_DATABASE_URL=url, ARREARS_KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    if args.publish_seconds is not None:
        env["ARREARS_SCORING_PUBLISH_SECONDS"] = str(args.publish_seconds)
    if args.consumer_only:
        env["ARREARS_SCORING_PUBLISH_SECONDS"] = "3600"
    if args.batch is not None:
        env["ARREARS_KAFKA_CONSUMER_BATCH"] = str(args.batch)
    workers: list[subprocess.Popen[bytes]] = []
    for n in range(args.replicas):
        cmd = [sys.executable, "-m", "bench.scoring_ledger", "--worker"]
        if args.profile_dir:
            cmd += ["--profile", str(Path(args.profile_dir) / f"replica-{n}.prof")]
        workers.append(subprocess.Popen(cmd, env=env, cwd=ROOT))
    spies = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(w.pid),
                "--format",
                "raw",
                "--nonblocking",
                "--rate",
                "200",
                "--output",
                str(Path(args.py_spy_dir) / f"replica-{n}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n, w in enumerate(workers)
        if args.py_spy_dir
    ]
    return workers, spies


async def drive(
    url: str, pg: EmbeddedPostgres, args: argparse.Namespace, n: int, workers: list[subprocess.Popen[bytes]]
) -> dict[str, object]:
    t0 = time.perf_counter()
    procs = [psutil.Process(w.pid) for w in workers]
    peaks = [0] * len(procs)
    engine = make_engine(url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    try:
        done = 0
        cpu_before = (0.0, 0.0)
        while done < n:
            await asyncio.sleep(0.05)
            for i, p in enumerate(procs):
                peaks[i] = max(peaks[i], p.memory_info().rss)
            if any(w.poll() is not None for w in workers):
                raise SystemExit("a worker exited early")
            sample = (_cpu(procs), tree_cpu(postmaster(pg)))
            async with sessionmaker() as session:
                done = int(await session.scalar(text("SELECT count(*) FROM scoring.inbox")) or 0)
            if not done:
                cpu_before = sample
        last = time.time()
        t_last = time.perf_counter()
        cpu_after = (_cpu(procs), tree_cpu(postmaster(pg)))
        async with sessionmaker() as session:
            first_at: datetime = await session.scalar(text("SELECT min(processed_at) FROM scoring.inbox"))
        steady = last - first_at.timestamp()
        dirty = 0 if args.consumer_only else 1
        while dirty:
            await asyncio.sleep(0.1)
            for i, p in enumerate(procs):
                peaks[i] = max(peaks[i], p.memory_info().rss)
            async with sessionmaker() as session:
                dirty = int(await session.scalar(text("SELECT count(*) FROM scoring.dirty_accounts")) or 0)
        published = time.perf_counter() - t0
        async with sessionmaker() as session:
            versions = int(await session.scalar(text("SELECT coalesce(sum(version), 0) FROM scoring.accounts")) or 0)
    finally:
        await engine.dispose()
    per_replica = [round(_cpu([p]), 1) for p in procs]
    join = t_last - t0 - steady
    svc_cpu = cpu_after[0] - cpu_before[0]
    pg_cpu = cpu_after[1] - cpu_before[1]
    result = {
        "events": n,
        "replicas": args.replicas,
        "events_per_s": round(n / steady),
        "first_to_last_s": round(steady, 2),
        "start_to_first_s": round(join, 1),
        "events_per_s_from_start": round(n / (t_last - t0)),
        "scoring_cpu_s_per_1000": round(svc_cpu / n * 1000, 3),
        "postgres_cpu_s_per_1000": round(pg_cpu / n * 1000, 3),
        "all_published_s": round(published, 1),
        "versions": versions,
        "peak_rss_mib": [round(p / 2**20) for p in peaks],
        "cpu_s_per_replica_total": per_replica,
        "load": os.getloadavg(),
    }
    return result


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    print(
        f"{r['events']} ledger events ({args.accounts} accounts x {args.per_account}), {args.replicas} replica(s): "
        f"{r['events_per_s']} events/s from the first event applied to the last ({r['first_to_last_s']} s; "
        f"group join and start took {r['start_to_first_s']} s before it; {r['events_per_s_from_start']} events/s "
        f"counting them). CPU per 1,000 events: scoring {r['scoring_cpu_s_per_1000']} s, PostgreSQL "
        f"{r['postgres_cpu_s_per_1000']} s. Every account published {r['all_published_s']} s after start "
        f"({r['versions']} versions). Peak RSS per replica {r['peak_rss_mib']} MiB. Load {r['load']}"
    )
    print(json.dumps(r))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_ledger")
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--per-account", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=1, help="scoring worker processes in the group")
    parser.add_argument("--publish-seconds", type=float, default=None, help="ARREARS_SCORING_PUBLISH_SECONDS")
    parser.add_argument(
        "--consumer-only",
        action="store_true",
        help="measure the consumer alone: the account publisher waits an hour (publishes only on stop)",
    )
    parser.add_argument("--batch", type=int, default=None, help="ARREARS_KAFKA_CONSUMER_BATCH")
    parser.add_argument("--profile-dir", default=None, help="write a cProfile of each replica here")
    parser.add_argument("--py-spy-dir", default=None, help="sample each replica with py-spy (installed apart)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.worker:
        asyncio.run(_worker(args.profile))
        return
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
            msgs = events(args.accounts, args.per_account)
            asyncio.run(produce(bootstrap, msgs))
            workers, spies = spawn(url, bootstrap, args)
            try:
                result = asyncio.run(drive(url, pg, args, len(msgs), workers))
            finally:
                for w in workers:
                    w.send_signal(signal.SIGTERM)
                for w in workers + spies:
                    w.wait(timeout=60)
            report(args, result)
        finally:
            pg.stop()
            stop_process(broker)


if __name__ == "__main__":
    main()
