"""Case manager timers: N due timers fired by two sweeper processes (replicas), each exactly once,
and their notifications requested (written to the outbox); plus the worklist query's p99 over
1,000,000 cases.

``python -m bench.case_manager_timers`` (needs nothing running: uses ``$DATABASE_URL``'s server or
an embedded PostgreSQL). ``ARREARS_BENCH_TIMERS`` / ``--timers`` (default 20000; the target is 100000) and
``ARREARS_BENCH_CASES`` / ``--cases`` (default 1000000) size it; ``--worklist-only`` runs the worklist part
alone, ``--explain`` prints each worklist shape's plan. The tests reuse :func:`seed_due_accounts` and the
``worker`` command.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from arrears_case_manager.cases.repository import CaseRepository
from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.cases.state import ACTIVE
from arrears_case_manager.cases.sweeper import Sweeper
from arrears_case_manager.models import accounts, outbox, timeline
from arrears_case_manager.policy.models import load_policy
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_sessionmaker
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.settings import async_database_url
from bench.measure import postmaster, tree_cpu

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
LAST_CPU: list[float] = []  # CPU seconds of each sweeper process of the last run_replicas


def _state(account_id: str, due: date) -> dict[str, Any]:
    days = (NOW.date() - due).days
    return {
        "account_id": account_id,
        "version": 1,
        "as_of": NOW.isoformat(),
        "customer": {
            "account_id": account_id,
            "name": "Bench Customer",
            "email": f"{account_id.lower()}@example.com",
            "country": "DE",
            "timezone": "Europe/Berlin",
            "language": "de",
            "consent": {"email": True, "sms": False},
        },
        "open_invoices": [
            {
                "invoice_id": f"{account_id}-1",
                "invoice_number": f"R-{account_id}",
                "currency": "EUR",
                "amount_minor": 12_345,
                "open_minor": 12_345,
                "issue_date": (due - timedelta(days=30)).isoformat(),
                "due_date": due.isoformat(),
                "days_past_due": days,
            }
        ],
        "balances": [{"currency": "EUR", "open_minor": 12_345, "overdue_minor": 12_345, "buckets": {"d1_30": 12_345}}],
        "oldest_due_date": due.isoformat(),
        "max_days_past_due": days,
        "risk": {"probability": 0.3, "tier": "medium", "model_version": "bench", "reasons": []},
    }


async def seed_due_accounts(url: str, n: int, prefix: str) -> None:
    """``n`` accounts 2 days overdue (level overdue_1: one email each) whose timers are due."""
    engine = create_async_engine(async_database_url(url))
    due = NOW.date() - timedelta(days=2)
    try:
        async with engine.begin() as conn:
            for start in range(0, n, 5000):
                rows = [
                    {
                        "account_id": f"{prefix}{i:07d}",
                        "version": 1,
                        "state": _state(f"{prefix}{i:07d}", due),
                        "wake_at": NOW - timedelta(minutes=1),
                        "updated_at": NOW,
                    }
                    for i in range(start, min(n, start + 5000))
                ]
                await conn.execute(insert(accounts), rows)
    finally:
        await engine.dispose()


async def _sweep_all(url: str, batch: int) -> int:
    engine = create_async_engine(async_database_url(url), pool_size=2)
    service = CaseService(Outbox(outbox), FixedClock(NOW), load_policy(None), "https://pay.example/{account_id}")
    # The deployed default interval: it also spaces the due-timer gauges' count while a backlog is worked off.
    interval = float(os.environ.get("ARREARS_CASES_SWEEP_SECONDS", "5"))
    sweeper = Sweeper(service, make_sessionmaker(engine), interval=interval, batch=batch)
    fired = 0
    idle = 0
    try:
        while idle < 3:
            n = await sweeper.sweep_once()
            fired += n
            idle = 0 if n else idle + 1
            if not n:
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    return fired


def worker(url: str, batch: int | None = None) -> None:
    if batch is None:  # the service's setting (ARREARS_CASES_SWEEP_BATCH), as a deployed sweeper uses it
        batch = int(os.environ.get("ARREARS_CASES_SWEEP_BATCH", "500"))
    start = time.process_time()
    fired = asyncio.run(_sweep_all(url, batch))
    cpu = time.process_time() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fired={fired} max_rss_mb={rss_mb:.0f} cpu_s={cpu:.2f}", flush=True)


def run_replicas(url: str, replicas: int = 2) -> tuple[list[int], list[float], float]:
    """Start ``replicas`` sweeper processes at once; (fired per process, max RSS MB each, seconds).
    Each process's CPU seconds are printed (``last_cpu``)."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.case_manager_timers", "worker", url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(replicas)
    ]
    fired: list[int] = []
    rss: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"sweeper exited with {proc.returncode}")
        fields: dict[str, str] = {}
        for part in out.split():
            name, _, value = part.partition("=")
            fields[name] = value
        fired.append(int(fields["fired"]))
        rss.append(float(fields["max_rss_mb"]))
        LAST_CPU.append(float(fields.get("cpu_s", "nan")))
    return fired, rss, time.perf_counter() - start


async def counts(url: str, prefix: str) -> dict[str, int]:
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.connect() as conn:
            stages = (await conn.execute(select(func.count()).where(timeline.c.kind == "stage_changed"))).scalar_one()
            notes = (
                await conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT convert_from(payload, 'UTF8')::jsonb->>'id') "
                        "FROM case_manager.outbox WHERE topic = 'collections.notifications.v1' AND key LIKE :p"
                    ),
                    {"p": prefix + "%"},
                )
            ).one()
            still_due = (await conn.execute(select(func.count()).where(accounts.c.wake_at <= NOW))).scalar_one()
        return {
            "stage_changes": int(stages),
            "notifications": int(notes[0]),
            "distinct_notifications": int(notes[1]),
            "still_due": int(still_due),
        }
    finally:
        await engine.dispose()


WORKLIST_FILTERS: list[dict[str, Any]] = [
    {},
    {"statuses": ["open"]},
    {"statuses": ["disputed"]},
    {"statuses": ["resolved"]},
    {"tier": "critical"},
    {"assignee": "collector-7"},
    {"currency": "USD", "min_amount_minor": 5_000_000},
    {"stage": "overdue_30", "tier": "high"},
    {"stage": "overdue_7", "currency": "GBP"},
]


async def seed_cases(url: str, n_cases: int) -> None:
    """``n_cases`` cases, 7 in 8 active, spread over 400 days, 4 tiers, 5 stages, 4 currencies, 50 collectors."""
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    INSERT INTO case_manager.cases
                      (case_id, account_id, status, stage, opened_at, tier, currency, overdue_minor,
                       opened_overdue_minor, priority, assignee)
                    SELECT 'wl-' || g, 'wl-acc-' || g,
                           (ARRAY['open','open','open','promised','payment_plan','disputed','paused',
                                  'resolved'])[1 + g % 8],
                           (ARRAY['due','overdue_1','overdue_7','overdue_14','overdue_30'])[1 + g % 5],
                           now() - (g % 400) * interval '1 day',
                           (ARRAY['low','medium','high','critical'])[1 + g % 4],
                           (ARRAY['EUR','USD','GBP','JPY'])[1 + g % 4],
                           (g * 7919) % 10000000, (g * 7919) % 10000000,
                           (g * 104729) % 100000000,
                           'collector-' || (g % 50)
                    FROM generate_series(1::bigint, CAST(:n AS bigint)) g
                    """
                ),
                {"n": n_cases},
            )
        # What autovacuum would have done by now on a live table: visibility map and statistics.
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE case_manager.cases"))
    finally:
        await engine.dispose()


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile of sorted values."""
    return ordered[max(0, min(len(ordered) - 1, int(len(ordered) * q + 0.999999) - 1))]


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(_percentile(ordered, 0.95), 2),
        "p99_ms": round(_percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2),
    }


async def _plan(session: AsyncSession, stmt: Select[Any]) -> str:
    """The scan and sort nodes of ``EXPLAIN ANALYZE`` for ``stmt`` (which index serves the shape)."""
    conn = await session.connection()
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = tuple(compiled.params[k] for k in compiled.positiontup or [])
    result = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), params)
    lines = [str(r[0]).strip() for r in result]
    keep = ("Scan", "Sort", "Rows Removed", "Buffers", "Execution")
    return " | ".join(line for line in lines if any(k in line for k in keep))


async def worklist_p99(url: str, queries: int = 480, explain: bool = False) -> dict[str, float]:
    """``queries`` worklist pages (limit 50) spread evenly over every filter x sort shape, a third of
    them from a random cursor deep in the list; prints p50/p95/p99/max per shape and returns the overall."""
    engine = create_async_engine(async_database_url(url), pool_size=2)
    try:
        repo = CaseRepository()
        sessionmaker = make_sessionmaker(engine)
        rng = random.Random(7)
        timings: list[float] = []
        by_shape: dict[str, list[float]] = {}
        shapes = [(f, sort) for f in WORKLIST_FILTERS for sort in ("priority", "age")]
        async with sessionmaker() as session:
            if explain:
                await session.execute(text("SET plan_cache_mode = force_custom_plan"))
            for i in range(queries):
                filters, sort = shapes[i % len(shapes)]
                f = dict(filters)
                after: tuple[Any, str] | None = None
                if (i // len(shapes)) % 3 == 2:
                    after = (
                        (rng.randrange(100_000_000), "wl-1")
                        if sort == "priority"
                        else (NOW - timedelta(days=rng.randrange(400)), "wl-1")
                    )
                kwargs: dict[str, Any] = {
                    "statuses": f.pop("statuses", list(ACTIVE)),
                    "stage": f.pop("stage", None),
                    "tier": f.pop("tier", None),
                    "assignee": f.pop("assignee", None),
                    "currency": f.pop("currency", None),
                    "min_amount_minor": f.pop("min_amount_minor", None),
                    "sort": sort,
                    "after": after,
                    "limit": 51,
                }
                start = time.perf_counter()
                await repo.list_cases(session, **kwargs)
                elapsed = (time.perf_counter() - start) * 1000
                timings.append(elapsed)
                name = f"{filters or 'active'} / {sort}"
                by_shape.setdefault(name, []).append(elapsed)
                if explain and i < len(shapes):
                    print(f"  plan {name}: {await _plan(session, repo.worklist_statement(**kwargs))}")
        for name, values in by_shape.items():
            print(f"  {name}: {_summary(values)}")
        return _summary(timings)
    finally:
        await engine.dispose()


def postgres_cpu(pg: Any) -> float | None:
    """CPU seconds the embedded PostgreSQL server has used so far, its ended backends included
    (None with ``$DATABASE_URL``'s server, whose other users would be counted too)."""
    return None if pg is None else tree_cpu(postmaster(pg))


def _database() -> tuple[str, Any]:
    from arrears_dev.stack import EmbeddedPostgres, create_database, free_port, with_database

    given = os.environ.get("DATABASE_URL")
    pg = None
    if given:
        admin = with_database(given, "postgres")
    else:
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench-pg-")), free_port())
        pg.start()
        admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    name = f"bench_cases_{os.getpid()}"
    create_database(admin, name)
    return with_database(admin, name), pg


def main(argv: list[str] | None = None) -> None:
    import argparse

    from arrears_case_manager.main import cli as _unused  # noqa: F401  (the package imports cleanly)
    from arrears_shared.migrations import upgrade

    parser = argparse.ArgumentParser(prog="python -m bench.case_manager_timers", description=__doc__)
    parser.add_argument("--worklist-only", action="store_true", help="skip the timers (same as ARREARS_BENCH_TIMERS=0)")
    parser.add_argument("--timers", type=int, default=int(os.environ.get("ARREARS_BENCH_TIMERS", "20000")))
    parser.add_argument("--cases", type=int, default=int(os.environ.get("ARREARS_BENCH_CASES", "1000000")))
    parser.add_argument("--queries", type=int, default=480, help="worklist pages, spread over every shape")
    parser.add_argument("--explain", action="store_true", help="print each worklist shape's plan once")
    args = parser.parse_args(argv or [])
    n_timers = 0 if args.worklist_only else args.timers
    url, pg = _database()
    try:
        upgrade(
            Path(__file__).resolve().parents[1] / "services/case_manager/arrears_case_manager/migrations",
            async_database_url(url),
            "case_manager",
        )
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load: {os.getloadavg()}")
        if n_timers:
            asyncio.run(seed_due_accounts(url, n_timers, "B"))
            pg_before = postgres_cpu(pg)
            fired, rss, seconds = run_replicas(url, 2)
            pg_after = postgres_cpu(pg)
            pg_cpu = (
                f"{pg_after - pg_before:.1f} s ({(pg_after - pg_before) / n_timers * 1e6:.0f} us per timer)"
                if pg_before is not None and pg_after is not None
                else "not measured"
            )
            c = asyncio.run(counts(url, "B"))
            cpu = sum(LAST_CPU)
            print(
                f"timers: {n_timers} due timers fired by 2 sweeper processes in {seconds:.1f} s "
                f"({n_timers / seconds:.0f}/s); fired per process {fired}; max RSS per process {rss} MB; "
                f"sweeper CPU {LAST_CPU} s ({cpu / n_timers * 1e6:.0f} us per timer); PostgreSQL CPU {pg_cpu}; "
                f"load {os.getloadavg()}; {c}"
            )
        if args.cases:
            asyncio.run(seed_cases(url, args.cases))
            print(f"seeded {args.cases} cases; load: {os.getloadavg()}")
            cpu = time.process_time()
            result = asyncio.run(worklist_p99(url, args.queries, args.explain))
            print(
                f"worklist over {args.cases} cases (+ the timers' cases), {args.queries} queries, limit 50: "
                f"{result}; bench process CPU {time.process_time() - cpu:.1f} s"
            )
        print(f"load after: {os.getloadavg()}")
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "worker":
        worker(sys.argv[2])
    else:
        main(sys.argv[1:])
