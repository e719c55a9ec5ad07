"""Ingest throughput and memory: the Kafka path (ar.inbound.v1 → ar.ledger.v1) and POST /v1/events in
batches of 500, each beside the broker's own produce-then-consume rate measured in the same run, with
ingest's peak RSS sampled throughout.

Runs its own broker (Tansu), PostgreSQL (``$DATABASE_URL`` or embedded) and one ingest process on
free ports: ``python -m bench.ingest_throughput [--events N] [--http-events N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from arrears_dev.stack import (
    EmbeddedPostgres,
    StackPorts,
    create_database,
    create_topics,
    free_port,
    service_env,
    start_broker,
    stop_process,
    wait_for_port,
    with_database,
)
from arrears_ingest.settings import IngestSettings
from arrears_shared.topics import INBOUND, LEDGER, TOPICS
from bench.measure import tree_cpu, wait_for_group

BATCH = 500


def events(n: int, run: str) -> list[dict[str, Any]]:
    """Half invoices (each claims its number), half payments, over 1,000 accounts."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        account = f"B-{i % 1000}"
        if i % 2 == 0:
            data: dict[str, Any] = {
                "invoice_id": f"{run}-I-{i}",
                "invoice_number": f"{run}-{i}",
                "account_id": account,
                "issue_date": "2026-03-01",
                "due_date": "2026-03-31",
                "currency": "EUR",
                "amount_minor": 10000 + i,
            }
            type_ = "ar.invoice.issued"
        else:
            data = {
                "payment_id": f"{run}-P-{i}",
                "account_id": account,
                "currency": "EUR",
                "amount_minor": 5000,
                "received_at": "2026-03-02T10:00:00Z",
                "reference": f"{run}-{i - 1}",
            }
            type_ = "ar.payment.received"
        out.append(
            {
                "specversion": "1.0",
                "id": f"{run}-{i}",
                "source": "bench-erp",
                "type": type_,
                "time": "2026-03-02T10:00:00Z",
                "subject": account,
                "data": data,
            }
        )
    return out


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def sampled(pid: int, prefix: str | None, name: str) -> Iterator[None]:
    """Sample ``pid`` with py-spy while the block runs (collapsed stacks in ``prefix-name.txt``)."""
    if not prefix:
        yield
        return
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw"]
    command += ["--rate", "250", "--nonblocking", "--output", f"{prefix}-{name}.txt"]
    spy = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5, max_batch_size=256 * 1024, acks="all"
    )
    await producer.start()
    try:
        # Packed into record batches per partition, as an ERP's bulk export would be: this client's CPU is
        # not ingest's, and on a 2-core machine it competes with it. Keys land where ``send`` puts them.
        partitions = list(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in values:
            by_partition.setdefault(partitioner(key, partitions, partitions), []).append((key, value))
        futures = []
        for partition, messages in by_partition.items():
            batch = producer.create_batch()
            for key, value in messages:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def ledger_watcher(bootstrap: str) -> tuple[AIOKafkaConsumer, dict[TopicPartition, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    parts = [TopicPartition(LEDGER, p) for p in (consumer.partitions_for_topic(LEDGER) or set())]
    if not parts:
        await consumer.stop()
        raise RuntimeError("ar.ledger.v1 has no partitions")
    consumer.assign(parts)
    ends = await consumer.end_offsets(parts)
    for tp, off in ends.items():
        consumer.seek(tp, off)
    return consumer, ends


async def count_until(consumer: AIOKafkaConsumer, n: int, timeout: float, run: str) -> int:
    """Count messages of this run (their ids start with ``run``) until ``n`` arrived."""
    marker = f'"id":"{run}-'.encode()
    seen = 0
    deadline = time.perf_counter() + timeout
    while seen < n and time.perf_counter() < deadline:
        batches = await consumer.getmany(timeout_ms=200, max_records=10000)
        seen += sum(1 for msgs in batches.values() for m in msgs if m.value is not None and marker in m.value)
    return seen


async def broker_baseline(bootstrap: str, n: int) -> float:
    """The broker's own rate: produce n messages of the same size, then consume them all."""
    topic = f"bench.baseline.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 12, 1)])
    finally:
        await admin.close()
    run = uuid.uuid4().hex[:6]
    values = [(e["subject"].encode(), orjson.dumps(e)) for e in events(n, run)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(12)]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    start = time.perf_counter()
    await produce(bootstrap, topic, values)
    try:
        got = await count_until(consumer, n, 120, run)
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - start
    assert got >= n, f"baseline consumed {got} of {n}"
    return n / elapsed


def last_per_partition(values: list[tuple[bytes, bytes]], ids: list[str], partitions: int) -> list[str]:
    """The id of the last event produced to each partition (keys placed as ``produce`` places them)."""
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    last: dict[int, str] = {}
    for (key, _), event_id in zip(values, ids, strict=True):
        last[partitioner(key, every, every)] = event_id
    return list(last.values())


async def accepted_at(database_url: str, run: str, n: int, start: float, sentinels: list[str]) -> float:
    """Seconds from ``start`` until ingest has recorded all ``n`` events of ``run`` (its consumer side).

    Ingest records a partition's events in offset order, so until the last event of every partition
    (``sentinels``) is recorded, the rest cannot all be: the poll looks up those few keys (an index
    lookup each), and counts every event of the run only once they are all there. (Counting the
    run's events on every poll scanned the whole table, and took a sizeable share of PostgreSQL's
    CPU away from ingest.)
    """
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            present = await conn.fetchval(
                "SELECT count(*) FROM ingest.received_events WHERE source = 'bench-erp' AND event_id = ANY($1)",
                sentinels,
            )
            if present >= len(sentinels):
                count = await conn.fetchval(
                    "SELECT count(*) FROM ingest.received_events WHERE source = 'bench-erp' AND event_id LIKE $1",
                    f"{run}-%",
                )
                if count >= n:
                    return time.perf_counter() - start
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


class Load:
    """One run's events, built (and encoded) before the measured window: making up the test data is not
    the load generator's work, producing it is."""

    def __init__(self, n: int) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.n = n
        items = events(n, self.run)
        self.values = [(e["subject"].encode(), orjson.dumps(e)) for e in items]
        inbound = next(t.partitions for t in TOPICS if t.name == INBOUND)
        self.sentinels = last_per_partition(self.values, [e["id"] for e in items], inbound)


async def kafka_path(bootstrap: str, load: Load, database_url: str | None = None) -> tuple[float, int, float | None]:
    n, run = load.n, load.run
    watcher, _ = await ledger_watcher(bootstrap)
    try:
        start = time.perf_counter()
        consumed = (
            asyncio.create_task(accepted_at(database_url, run, n, start, load.sentinels)) if database_url else None
        )
        await produce(bootstrap, INBOUND, load.values)
        got = await count_until(watcher, n, 600, run)
        elapsed = time.perf_counter() - start
        consumer_side = await consumed if consumed is not None else None
    finally:
        await watcher.stop()
    return got / elapsed, got, (n / consumer_side if consumer_side else None)


async def http_path(bootstrap: str, port: int, n: int, concurrency: int) -> tuple[float, float, int]:
    run = uuid.uuid4().hex[:6]
    items = events(n, run)
    bodies = [orjson.dumps(items[i : i + BATCH]) for i in range(0, n, BATCH)]
    watcher, _ = await ledger_watcher(bootstrap)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post("/v1/events", content=body, headers={"content-type": "application/json"})
            r.raise_for_status()
            accepted += r.json()["accepted"]

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            start = time.perf_counter()
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
            http_elapsed = time.perf_counter() - start
            got = await count_until(watcher, n, 600, run)
            ledger_elapsed = time.perf_counter() - start
    finally:
        await watcher.stop()
    assert accepted == n, f"accepted {accepted} of {n}"
    return n / http_elapsed, got / ledger_elapsed, got


class Ingest:
    """The ingest processes under test: one running everything, or N workers and one API process; with
    ``relay_process``, those run no outbox relay and one ``role=relay`` process publishes the outbox."""

    def __init__(
        self, env: dict[str, str], api_port: int, replicas: int, logs: Path, *, relay_process: bool = False
    ) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], int]] = []
        logs.mkdir(parents=True, exist_ok=True)
        roles = [("all", api_port)] if replicas == 0 else [("api", api_port)]
        roles += [("worker", free_port()) for _ in range(replicas)]
        if relay_process:
            roles += [("relay", free_port())]
        for n, (role, port) in enumerate(roles):
            proc_env = {**env, "ARREARS_ROLE": role, "ARREARS_INGEST_PORT": str(port)}
            if relay_process and role != "relay":
                proc_env["ARREARS_OUTBOX_RELAY"] = "false"
            proc = subprocess.Popen(
                [sys.executable, "-m", "arrears_ingest.main", "serve"],
                env=proc_env,
                stdout=(logs / f"ingest-{n}-{role}.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append((role, proc, port))

    def wait_ready(self) -> None:
        for _, proc, port in self.procs:
            wait_for_port(port, 60, proc)
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds (user + system) of each ingest process so far, by ``ingest/N-ROLE``."""
        out = {}
        for n, (role, proc, _) in enumerate(self.procs):
            t = psutil.Process(proc.pid).cpu_times()
            out[f"ingest/{n}-{role}"] = t.user + t.system
        return out

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            stop_process(proc)


class CpuMeter:
    """CPU seconds spent by ingest, the broker, PostgreSQL (when embedded) and this benchmark's clients."""

    def __init__(self, ingest: Ingest, broker: int, postgres: int | None) -> None:
        self.ingest, self.broker, self.postgres = ingest, broker, postgres

    def read(self) -> dict[str, float]:
        by_process = self.ingest.cpu_by_process()
        out = {"ingest": sum(by_process.values()), "broker": tree_cpu(self.broker), "bench": time.process_time()}
        if self.postgres is not None:
            out["postgres"] = tree_cpu(self.postgres)
        if len(by_process) > 1:  # each ingest process too (not counted again in the total)
            out.update(by_process)
        return out

    @staticmethod
    def report(before: dict[str, float], after: dict[str, float], events: int, wall: float) -> str:
        parts = [f"{name} {(after[name] - before[name]) / events * 1e6:.0f}" for name in after]
        total = sum(after[name] - before[name] for name in after if "/" not in name)
        return (
            f"CPU per event (µs): {', '.join(parts)}; all {total / events * 1e6:.0f} "
            f"({total / wall:.2f} cores busy on average)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events through the Kafka path (0: skip it)")
    parser.add_argument("--http-events", type=int, default=50_000, help="events through POST /v1/events (0: skip)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP requests")
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="0: one ingest process running everything (the default settings); N: N `role=worker` ingest "
        "processes (their inbound consumers split the partitions) and one `role=api` process for HTTP",
    )
    parser.add_argument(
        "--relay-process",
        action="store_true",
        help="run the outbox relay in its own `role=relay` ingest process; the others get ARREARS_OUTBOX_RELAY=false",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an ingest setting, e.g. ARREARS_INGEST_INBOUND_CONSUMERS=4",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="sample the first ingest process with py-spy (install it into the venv) during each path: "
        "PREFIX-kafka.txt, PREFIX-http.txt",
    )
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["ingest_throughput"] else sys.argv[1:])
    settings = dict(kv.split("=", 1) for kv in args.set)
    default_consumers = IngestSettings.model_fields["inbound_consumers"].default
    consumers_per_process = int(settings.get("ARREARS_INGEST_INBOUND_CONSUMERS", default_consumers))

    with tempfile.TemporaryDirectory(prefix="arrears-bench-") as tmp:
        var = Path(tmp)
        ports = StackPorts(broker=free_port(), ingest=free_port())
        broker = start_broker(ports.broker, var / "broker.log")
        pg: EmbeddedPostgres | None = None
        ingest: Ingest | None = None
        try:
            bootstrap = f"127.0.0.1:{ports.broker}"
            create_topics(bootstrap)
            given = os.environ.get("DATABASE_URL")
            if given:
                admin = with_database(given, "postgres")
            else:
                pg = EmbeddedPostgres(var / "pg", free_port())
                pg.start()
                admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
            name = f"bench_{uuid.uuid4().hex[:6]}"
            create_database(admin, name)
            db_url = with_database(admin, name)
            env = service_env(db_url, ports, settings)
            subprocess.run([sys.executable, "-m", "arrears_ingest.main", "migrate"], env=env, check=True)
            ingest = Ingest(env, ports.ingest, args.replicas, var / "log", relay_process=args.relay_process)
            ingest.wait_ready()
            members = consumers_per_process * max(args.replicas, 1)
            stable = asyncio.run(wait_for_group(bootstrap, "arrears-ingest", members))
            print(
                f"ingest processes: {', '.join(role for role, _, _ in ingest.procs)}; "
                f"consumer group of {members} stable: {stable}"
            )
            print(f"load before: {os.getloadavg()}, cores: {os.cpu_count()}")
            first = ingest.procs[0][1].pid
            pg_pid = int((pg.pgdata / "postmaster.pid").read_text().split()[0]) if pg is not None else None
            meter = CpuMeter(ingest, broker.pid, pg_pid)
            samplers = [RssSampler(proc.pid) for _, proc, _ in ingest.procs]
            for sampler in samplers:
                sampler.__enter__()
            try:
                asyncio.run(kafka_path(bootstrap, Load(2000)))  # warm-up: consumer group joined, pools open
                if args.events:
                    base_k = asyncio.run(broker_baseline(bootstrap, args.events))
                    load = Load(args.events)
                    m0, w0 = meter.read(), time.perf_counter()
                    with sampled(first, args.profile, "kafka"):
                        kafka_rate, kafka_got, consumer_rate = asyncio.run(kafka_path(bootstrap, load, db_url))
                    m1, kafka_wall = meter.read(), time.perf_counter() - w0
                    kafka_cpu = m1["ingest"] - m0["ingest"]
                if args.http_events:
                    base_h = asyncio.run(broker_baseline(bootstrap, args.http_events))
                    h0, w0 = meter.read(), time.perf_counter()
                    with sampled(first, args.profile, "http"):
                        http_rate, http_ledger_rate, http_got = asyncio.run(
                            http_path(bootstrap, ports.ingest, args.http_events, args.concurrency)
                        )
                    h1, http_wall = meter.read(), time.perf_counter() - w0
                    http_cpu = h1["ingest"] - h0["ingest"]
            finally:
                for sampler in samplers:
                    sampler.__exit__()
            print(f"load after: {os.getloadavg()}")
            if args.events:
                print(f"broker produce-then-consume ({args.events} msgs): {base_k:,.0f} msg/s")
                print(f"kafka path ar.inbound.v1 -> ar.ledger.v1 ({kafka_got} events): {kafka_rate:,.0f} events/s")
                if consumer_rate:
                    print(f"  of which ar.inbound.v1 -> judged and in the outbox: {consumer_rate:,.0f} events/s")
                print(
                    f"ingest CPU, kafka path: {kafka_cpu:.1f} s over {kafka_wall:.1f} s wall "
                    f"({kafka_cpu / kafka_wall:.0%} of one core, {kafka_cpu / args.events * 1e6:.0f} µs/event)"
                )
                print(f"  {CpuMeter.report(m0, m1, args.events, kafka_wall)}")
            if args.http_events:
                print(f"broker produce-then-consume ({args.http_events} msgs): {base_h:,.0f} msg/s")
                print(
                    f"POST /v1/events, batches of {BATCH}, {args.concurrency} concurrent ({args.http_events} events): "
                    f"{http_rate:,.0f} events/s accepted; {http_ledger_rate:,.0f} events/s to ar.ledger.v1 ({http_got})"
                )
                print(
                    f"ingest CPU, HTTP: {http_cpu:.1f} s over {http_wall:.1f} s wall "
                    f"({http_cpu / http_wall:.0%} of one core, {http_cpu / args.http_events * 1e6:.0f} µs/event)"
                )
                print(f"  {CpuMeter.report(h0, h1, args.http_events, http_wall)}")
            peaks = ", ".join(
                f"{role} {s.peak / 2**20:,.0f} MB" for (role, _, _), s in zip(ingest.procs, samplers, strict=True)
            )
            print(f"ingest peak RSS per process: {peaks}")
        finally:
            if ingest is not None:
                ingest.stop()
            stop_process(broker)
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
