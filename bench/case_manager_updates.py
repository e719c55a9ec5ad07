"""Case manager: ``ar.account.updated`` events applied from Kafka per second (real broker, real
consumer with inbox and outbox, real PostgreSQL), and the consumer process's memory.

``python -m bench.case_manager_updates``; ``ARREARS_BENCH_UPDATES`` (default 20000) events over
``ARREARS_BENCH_UPDATE_ACCOUNTS`` (default 5000) accounts: the first event of each account opens a
case (notification requested), the later ones change its balance and re-evaluate it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from arrears_case_manager.cases.consumer import case_router
from arrears_case_manager.cases.service import CaseService
from arrears_case_manager.models import inbox, outbox
from arrears_case_manager.policy.models import load_policy
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_sessionmaker
from arrears_shared.events.envelope import new_event
from arrears_shared.events.v1 import AccountUpdated
from arrears_shared.messaging.consumer import BatchConsumer
from arrears_shared.messaging.kafka import make_consumer
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.settings import CommonSettings, async_database_url
from arrears_shared.topics import ACCOUNTS
from bench.case_manager_timers import NOW, _database, _state


async def _produce(bootstrap: str, n: int, accounts: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        due = NOW.date() - timedelta(days=9)
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
            await producer.send(ACCOUNTS, event.to_json(), key=acc.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(url: str, bootstrap: str, n: int) -> tuple[float, float, int]:
    """(seconds from start to the last event applied, seconds from the first applied batch seen to the
    last, events applied when that first batch was seen): the consumer joining its group (about 15 s
    with the dev broker) is in the first figure only."""
    engine = create_async_engine(async_database_url(url), pool_size=2)
    sessionmaker = make_sessionmaker(engine)
    service = CaseService(Outbox(outbox), FixedClock(NOW), load_policy(None), "https://pay.example/{account_id}")
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap)
    consumer = BatchConsumer(
        consumer=make_consumer(settings, "bench-cases", [ACCOUNTS], "bench"),
        group_id="bench-cases",
        sessionmaker=sessionmaker,
        inbox=inbox,
        outbox=Outbox(outbox),
        router=case_router(service),
        one_transaction_per_poll=True,  # as the service runs it (app.py)
    )
    start = time.perf_counter()
    first: tuple[float, int] | None = None
    task = asyncio.create_task(consumer.run())
    try:
        while True:
            await asyncio.sleep(0.2)
            async with engine.connect() as conn:
                done = (await conn.execute(select(func.count()).select_from(inbox))).scalar_one()
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= n:
                assert first is not None
                return now - start, now - first[0], first[1]
            if task.done():
                task.result()
                raise RuntimeError("consumer stopped")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await engine.dispose()


def main() -> None:
    from arrears_dev.stack import create_topics, free_port, start_broker, stop_process
    from arrears_shared.migrations import upgrade

    n = int(os.environ.get("ARREARS_BENCH_UPDATES", "20000"))
    accounts = int(os.environ.get("ARREARS_BENCH_UPDATE_ACCOUNTS", "5000"))
    url, pg = _database()
    port = free_port()
    broker = start_broker(port, Path(tempfile.mkdtemp(prefix="bench-broker-")) / "broker.log")
    bootstrap = f"127.0.0.1:{port}"
    try:
        create_topics(bootstrap)
        upgrade(
            Path(__file__).resolve().parents[1] / "services/case_manager/arrears_case_manager/migrations",
            async_database_url(url),
            "case_manager",
        )
        asyncio.run(_produce(bootstrap, n, accounts))
        print(f"load: {os.getloadavg()}")
        cpu_start = time.process_time()
        seconds, steady, before = asyncio.run(_consume(url, bootstrap, n))
        cpu = time.process_time() - cpu_start
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"updates: {n} ar.account.updated over {accounts} accounts applied from Kafka in {seconds:.1f} s "
            f"({n / seconds:.0f}/s; after the group join: {n - before} in {steady:.1f} s, "
            f"{(n - before) / steady:.0f}/s), "
            f"one consumer process, max RSS {rss_mb:.0f} MB; consumer CPU {cpu:.1f} s "
            f"({cpu / n * 1e6:.0f} us per update); load after {os.getloadavg()}"
        )
    finally:
        stop_process(broker)
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
