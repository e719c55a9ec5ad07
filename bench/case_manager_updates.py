"""Case manager: ``ar.account.updated`` events applied from Kafka per second (real broker, real
consumer with inbox and outbox, real PostgreSQL), and the consumer process's memory.

``python -m bench.case_manager_updates [--replicas 1] [--consumers 2] [--updates 20000]
[--accounts 5000] [--profile-dir DIR]``; ``--updates`` (or ``ARREARS_BENCH_UPDATES``) events over
``--accounts`` (or ``ARREARS_BENCH_UPDATE_ACCOUNTS``) accounts: the first event of each account opens a
case (notification requested), the later ones change its balance and re-evaluate it. ``--replicas``
consumer processes (each as the service runs it, one group, splitting the 12 partitions;
``--consumers`` Kafka consumers of the group per process, the service's ``ARREARS_KAFKA_CONSUMERS``,
default 1) apply them once they are produced (encoded beforehand; the group forms with every
consumer within its initial rebalance delay). Printed: the rate from the first applied to the last,
the consumer CPU summed over the processes (from their start, so the group join is included), the embedded
PostgreSQL's CPU over the same span (not measured with ``$DATABASE_URL``'s server), each process's
peak RSS and the load average; ``--profile-dir`` writes a cProfile of each process.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from arrears_case_manager.cases.consumer import case_router
from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.models import inbox, outbox
from arrears_case_manager.policy.models import load_policy
from arrears_case_manager.settings import CaseSettings
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_sessionmaker
from arrears_shared.events.envelope import new_event
from arrears_shared.events.v1 import AccountUpdated
from arrears_shared.messaging.consumer import BatchConsumer
from arrears_shared.messaging.kafka import make_consumer
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.runtime import tune_gc
from arrears_shared.settings import CommonSettings, async_database_url
from arrears_shared.topics import ACCOUNTS
from bench.case_manager_timers import NOW, _database, _state
from bench.measure import postmaster, tree_cpu


def _events(n: int, accounts: int) -> list[tuple[bytes, bytes]]:
    """The ``n`` events (key, value), encoded before anything is measured."""
    due = NOW.date() - timedelta(days=9)
    out = []
    for i in range(n):
        acc = f"U{i % accounts:07d}"
        version = i // accounts + 1
        state = _state(acc, due)
        state["version"] = version
        amount = 12_345 - 100 * (version - 1)
        state["open_invoices"][0]["open_minor"] = amount
        state["balances"][0].update(open_minor=amount, overdue_minor=amount, buckets={"d1_30": amount})
        event = new_event(
            type="ar.account.updated",
            source="bench/scoring",
            subject=acc,
            data=AccountUpdated.model_validate(state),
            time=NOW,
        )
        out.append((acc.encode(), event.to_json()))
    return out


async def _produce(bootstrap: str, events: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        for key, value in events:
            await producer.send(ACCOUNTS, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- worker (one replica)


async def _worker(url: str, bootstrap: str, profile: str | None, consumers: int) -> None:
    """One consumer process of the group, as the service runs it (app.py: ``consumers`` Kafka consumers of
    the group, ``ARREARS_KAFKA_CONSUMERS``), until SIGTERM."""
    engine = create_async_engine(async_database_url(url), pool_size=consumers + 1)
    sessionmaker = make_sessionmaker(engine)
    service = CaseService(Outbox(outbox), FixedClock(NOW), load_policy(None), "https://pay.example/{account_id}")
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap)
    group = [
        BatchConsumer(
            consumer=make_consumer(settings, "bench-cases", [ACCOUNTS], "bench"),
            group_id="bench-cases",
            sessionmaker=sessionmaker,
            inbox=inbox,
            outbox=Outbox(outbox),
            router=case_router(service),
            one_transaction_per_poll=True,  # as the service runs it (app.py)
        )
        for _ in range(consumers)
    ]

    def stop() -> None:
        for consumer in group:
            consumer.stop()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    tune_gc()  # as the service's runtime does once started (Runtime.lifespan)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    try:
        await asyncio.gather(*(consumer.run() for consumer in group))
    finally:
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        await engine.dispose()


# --------------------------------------------------------------------------- driver


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _peak_rss_mb(proc: psutil.Process) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float(proc.memory_info().rss / 2**20)


async def _drive(
    url: str, n: int, procs: list[psutil.Process], pg: psutil.Process | None, start: float
) -> dict[str, Any]:
    """Wait until all ``n`` events are applied; the rate from the first applied (the start of the
    first transaction that applied any, the inbox's ``processed_at``) to the last seen applied, and
    the workers' CPU from their start to then (the group join included). PostgreSQL's CPU (``pg``, the
    postmaster: its backends included) is counted from the same first applied batch."""
    engine = create_async_engine(async_database_url(url), pool_size=1)
    # The workers' (and PostgreSQL's) CPU when the last poll saw nothing or little applied.
    before = ([_cpu(p) for p in procs], 0, tree_cpu(pg))
    try:
        while True:
            await asyncio.sleep(0.1)
            sample = [_cpu(p) for p in procs]
            pg_sample = tree_cpu(pg)
            async with engine.connect() as conn:
                done = (await conn.execute(select(func.count()).select_from(inbox))).scalar_one()
            if not done:
                before = (sample, 0, pg_sample)
            elif before[1] == 0:
                before = (sample, done, pg_sample)  # the first applied batch: CPU from here is the steady state's
            if done >= n:
                last = time.time()
                took = time.perf_counter() - start
                cpu = [_cpu(p) for p in procs]
                pg_cpu = tree_cpu(pg) - before[2]
                peaks = [_peak_rss_mb(p) for p in procs]
                async with engine.connect() as conn:
                    first = (await conn.execute(select(func.min(inbox.c.processed_at)))).scalar_one()
                return {
                    "seconds": took,
                    "steady": last - first.timestamp(),
                    "cpu": cpu,
                    "peaks": peaks,
                    "steady_cpu": sum(cpu) - sum(before[0]),
                    "steady_events": n - before[1],
                    "steady_pg_cpu": pg_cpu if pg is not None else None,
                }
            for p in procs:
                if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                    raise RuntimeError("a consumer process stopped")
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    from arrears_dev.stack import create_topics, free_port, start_broker, stop_process
    from arrears_shared.migrations import upgrade

    parser = argparse.ArgumentParser(prog="python -m bench.case_manager_updates", description=__doc__)
    parser.add_argument("--replicas", type=int, default=1, help="consumer processes in the group (default 1)")
    parser.add_argument(
        "--consumers",
        type=int,
        default=CaseSettings.model_fields["kafka_consumers"].default,
        help="Kafka consumers of the group per process (the service's ARREARS_KAFKA_CONSUMERS; default as the service)",
    )
    parser.add_argument("--updates", type=int, default=int(os.environ.get("ARREARS_BENCH_UPDATES", "20000")))
    parser.add_argument("--accounts", type=int, default=int(os.environ.get("ARREARS_BENCH_UPDATE_ACCOUNTS", "5000")))
    parser.add_argument("--profile-dir", default=None, help="write a cProfile of each replica here (replica-N.prof)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(_worker(args.url, args.bootstrap, args.profile, args.consumers))
        return

    n, accounts = args.updates, args.accounts
    url, pg = _database()
    port = free_port()
    broker = start_broker(port, Path(tempfile.mkdtemp(prefix="bench-broker-")) / "broker.log")
    bootstrap = f"127.0.0.1:{port}"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        create_topics(bootstrap)
        upgrade(
            Path(__file__).resolve().parents[1] / "services/case_manager/arrears_case_manager/migrations",
            async_database_url(url),
            "case_manager",
        )
        produced = time.perf_counter()
        asyncio.run(_produce(bootstrap, _events(n, accounts)))
        if args.profile_dir:
            Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()
        for i in range(args.replicas):
            cmd = [
                sys.executable,
                "-m",
                "bench.case_manager_updates",
                "--worker",
                "--url",
                url,
                "--bootstrap",
                bootstrap,
                "--consumers",
                str(args.consumers),
            ]
            if args.profile_dir:
                cmd += ["--profile", str(Path(args.profile_dir).resolve() / f"replica-{i}.prof")]
            workers.append(subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1]))
        r = asyncio.run(_drive(url, n, [psutil.Process(w.pid) for w in workers], postmaster(pg), produced))
        cpu = sum(r["cpu"])
        pg_cpu = r["steady_pg_cpu"]
        pg_text = (
            "not measured"
            if pg_cpu is None
            else f"{pg_cpu:.1f} s, {pg_cpu / r['steady_events'] * 1e6:.0f} us per update after the first applied batch"
        )
        print(
            f"updates: {n} ar.account.updated over {accounts} accounts, {args.replicas} consumer process(es) "
            f"of {args.consumers} consumer(s) each: "
            f"{r['steady']:.1f} s from the first applied to the last, {n / r['steady']:.0f}/s "
            f"({r['seconds']:.1f} s from the first produced, the group join included: {n / r['seconds']:.0f}/s); "
            f"consumer CPU {cpu:.1f} s summed ({', '.join(f'{c:.1f}' for c in r['cpu'])}), "
            f"{cpu / n * 1e6:.0f} us per update (after the first applied batch: {r['steady_cpu']:.1f} s for "
            f"{r['steady_events']}, {r['steady_cpu'] / r['steady_events'] * 1e6:.0f} us per update); "
            f"PostgreSQL CPU {pg_text}; "
            f"peak RSS per process {', '.join(f'{m:.0f}' for m in r['peaks'])} MB; "
            f"load before {load_before}, after {os.getloadavg()}"
        )
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        stop_process(broker)
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
