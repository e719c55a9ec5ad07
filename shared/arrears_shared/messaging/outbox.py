"""The transactional outbox: events are written in the same transaction as the change that
causes them, and a relay publishes them afterwards, in order per key.

Order per key with several relay replicas: every row carries a shard (a stable hash of its key),
and a relay only takes rows whose shard it holds as a transaction-scoped advisory lock, taken
before it reads any row. All rows of one key are in one shard, so only one relay at a time
publishes a key's events, oldest first, and the next relay starts after the previous one committed.
Rows are taken with FOR UPDATE SKIP LOCKED and deleted in the same statement; the deletion
commits only once the broker has acknowledged them (a failed publish rolls it back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import (
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    TextClause,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arrears_shared.db import copy_rows
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.messaging.kafka import Producer
from arrears_shared.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, PRODUCED
from arrears_shared.tracing import trace_headers

log = logging.getLogger(__name__)

SHARDS = 64


def lock_namespace(table: Table) -> int:
    """The first key of the two-int advisory locks a relay takes on ``table``'s shards: one per outbox
    table, so that the relays of services sharing a database never hold (and skip) each other's shards."""
    return zlib.crc32(f"{table.schema}.{table.name}".encode()) & 0x7FFFFFFF


def shard_of(key: str | None) -> int:
    return zlib.crc32((key or "").encode()) % SHARDS


class Outbox:
    """Writes events into one service's outbox table (inside the caller's transaction)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._insert: TextClause | None = None

    async def add(
        self,
        session: AsyncSession,
        topic: str,
        event: CloudEvent,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue ``event`` for ``topic``, keyed by ``key`` (default: the event's subject)."""
        k = key if key is not None else event.subject
        await session.execute(
            insert(self.table).values(
                topic=topic,
                key=k,
                shard=shard_of(k),
                payload=event.to_json(),
                headers={**trace_headers(), **(headers or {})},
            )
        )

    async def add_raw(
        self,
        session: AsyncSession,
        topic: str,
        payload: bytes,
        *,
        key: str | None,
        headers: Mapping[str, str],
    ) -> None:
        """Queue bytes as they are (the DLQ keeps a poison message unchanged)."""
        await session.execute(
            insert(self.table).values(topic=topic, key=key, shard=shard_of(key), payload=payload, headers=dict(headers))
        )

    async def add_many(self, session: AsyncSession, rows: list[tuple[str, CloudEvent]]) -> None:
        """Queue many (topic, event) pairs in one statement, keyed by each event's subject."""
        await self.add_payloads(session, [(topic, ev.subject, ev.to_json()) for topic, ev in rows])

    async def add_payloads(
        self,
        session: AsyncSession,
        rows: list[tuple[str, str | None, bytes]],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue many (topic, key, payload) rows, payloads already JSON, in one statement.

        The rows go in as arrays (``unnest``), so the statement's text is the same for any number of
        rows: compiled and prepared once, instead of a multi-row VALUES list built for every batch.
        They carry the trace of the work that emits them, plus ``headers``.
        """
        if not rows:
            return
        if self._insert is None:
            name = f'"{self.table.schema}"."{self.table.name}"'
            self._insert = text(
                f"INSERT INTO {name} (topic, key, shard, payload, headers) "  # noqa: S608
                "SELECT t, k, s, p, CAST(:headers AS jsonb) FROM unnest(:topics, :keys, :shards, :payloads) "
                "AS u(t, k, s, p)"
            ).bindparams(
                bindparam("topics", type_=ARRAY(Text)),
                bindparam("keys", type_=ARRAY(Text)),
                bindparam("shards", type_=ARRAY(SmallInteger)),
                bindparam("payloads", type_=ARRAY(LargeBinary)),
                bindparam("headers", type_=JSONB),
            )
        await session.execute(
            self._insert,
            {
                "topics": [r[0] for r in rows],
                "keys": [r[1] for r in rows],
                "shards": [shard_of(r[1]) for r in rows],
                "payloads": [r[2] for r in rows],
                "headers": {**trace_headers(), **(headers or {})},
            },
        )

    async def copy_payloads(
        self,
        session: AsyncSession,
        rows: list[tuple[str, str | None, bytes]],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """:meth:`add_payloads` written by one binary ``COPY`` (see :func:`arrears_shared.db.copy_rows`):
        the same rows, cheaper for PostgreSQL and for the driver when there are many."""
        if not rows:
            return
        header_json = orjson.dumps({**trace_headers(), **(headers or {})}).decode()
        await copy_rows(
            session,
            self.table.name,
            str(self.table.schema),
            ("topic", "key", "shard", "payload", "headers"),
            [(topic, key, shard_of(key), payload, header_json) for topic, key, payload in rows],
        )


class OutboxRelay:
    """Publishes a service's outbox to Kafka. Safe to run in every replica."""

    def __init__(
        self,
        table: Table,
        sessionmaker: async_sessionmaker[AsyncSession],
        producer: Producer | None,
        *,
        batch: int = 1000,
        poll_seconds: float = 0.2,
        parallel: int = 1,
    ) -> None:
        self.table = table
        self.sessionmaker = sessionmaker
        self.producer = producer
        self.batch = batch
        self.poll_seconds = poll_seconds
        # Rounds run at once by :meth:`run`, each over its own transaction and at most 1/parallel of the
        # shards (starting at a random one), so that they publish disjoint keys side by side.
        self.parallel = parallel
        self._wakes: list[asyncio.Event] = []
        self._stopping = asyncio.Event()
        # The schema and table names come from code (each service's models), never from input.
        # Shards are locked in one statement and rows read in the next: were both in one statement,
        # a lock taken late in the scan could let rows of a shard overtake earlier rows skipped
        # while another relay still held it. The shards tried are those of the oldest rows (as many
        # as a round takes, read through the primary key), not every shard of the table: a
        # DISTINCT over the whole outbox read every row left and every dead one not yet vacuumed,
        # on every round. A shard whose rows are all younger waits for a later round.
        name = f'"{table.schema}"."{table.name}"'
        namespace = lock_namespace(table)
        oldest = f"SELECT DISTINCT shard FROM (SELECT shard FROM {name} ORDER BY id LIMIT :scan) AS o"  # noqa: S608
        self._lock_shards = text(
            f"SELECT shard FROM ({oldest}) AS d WHERE pg_try_advisory_xact_lock({namespace}, shard)"  # noqa: S608
        )
        # The same, stopping after :n shards, tried in order from :start on (a materialized CTE is read
        # row by row, so no lock is taken beyond the limit).
        self._lock_some_shards = text(
            f"WITH d AS MATERIALIZED (SELECT shard FROM ({oldest}) AS s "  # noqa: S608
            f"ORDER BY (shard + {SHARDS} - :start) % {SHARDS}) "
            f"SELECT shard FROM d WHERE pg_try_advisory_xact_lock({namespace}, shard) LIMIT :n"
        )
        # Rows are claimed and deleted in one statement (the deletion commits only once the broker
        # has acknowledged them, so a failed publish rolls it back): found by their physical
        # address (a TID scan), not looked up again through the primary key one by one.
        self._claim = text(
            f"WITH taken AS (DELETE FROM {name} WHERE ctid = ANY(ARRAY("  # noqa: S608
            f"SELECT ctid FROM {name} WHERE shard = ANY(:shards) ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED)) "
            "RETURNING id, topic, key, payload, headers::text AS headers) "
            "SELECT topic, key, payload, headers FROM taken ORDER BY id"
        )
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, tuple[int, dict[str, int]]] = {}

    def wake(self) -> None:
        """Publish now rather than at the next poll (call after committing outbox rows)."""
        for wake in self._wakes:
            wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self.wake()

    async def stopped(self) -> None:
        """Return once :meth:`stop` was called (for a process whose outbox another process relays)."""
        await self._stopping.wait()

    async def relay_once(self) -> int:
        async with self.sessionmaker() as session, session.begin():
            if self.parallel > 1:
                some = {"start": random.randrange(SHARDS), "n": -(-SHARDS // self.parallel), "scan": self.batch}
                shards = list((await session.execute(self._lock_some_shards, some)).scalars())
            else:
                shards = list((await session.execute(self._lock_shards, {"scan": self.batch})).scalars())
            if not shards:
                return 0
            rows: list[tuple[str, str | None, bytes, str]] = [
                tuple(r) for r in await session.execute(self._claim, {"n": self.batch, "shards": shards})
            ]
            if not rows:
                return 0
            assert self.producer is not None, "the relay needs a started producer"
            # Until this transaction commits, the rows are only marked deleted: if publishing fails,
            # they are back for the next round.
            futures, counts = await self._publish(rows)
            await asyncio.gather(*futures)
        for topic, n in counts.items():
            PRODUCED.labels(topic=topic).inc(n)
        return len(rows)

    async def _publish(
        self, rows: Sequence[tuple[str, str | None, bytes, str]]
    ) -> tuple[list[asyncio.Future[Any]], dict[str, int]]:
        """Hand ``rows`` (topic, key, payload, headers as JSON text) to the producer, in order per
        partition; the futures resolve once acknowledged. Also returns how many rows each topic got.

        Rows are packed into one record batch per partition (as many as they need) rather than sent
        one by one: a key goes to the partition the producer's default partitioner gives it, as it
        would through ``send``, and a partition's rows keep their outbox order.
        """
        assert self.producer is not None
        producer = self.producer
        futures: list[asyncio.Future[Any]] = []
        counts: dict[str, int] = {}
        by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes, str]]] = {}
        choosers: dict[str, Callable[[str | None], int]] = {}
        for topic, key, payload, headers_text in rows:
            choose = choosers.get(topic)
            if choose is None:
                choose = choosers[topic] = self._chooser(topic, await producer.partitions_for(topic))
                counts[topic] = 0
            counts[topic] += 1
            part = by_partition.get((topic, partition := choose(key)))
            if part is None:
                part = by_partition[(topic, partition)] = []
            part.append((key.encode() if key is not None else None, payload, headers_text))
        # Headers come as JSON text, decoded once per distinct value: the rows one transaction wrote share theirs.
        decoded: dict[str, list[tuple[str, bytes]]] = {}
        for (topic, partition), part in by_partition.items():
            batch = producer.create_batch()
            append = batch.append
            for key_bytes, payload, headers_text in part:
                headers = decoded.get(headers_text)
                if headers is None:
                    parsed: dict[str, Any] = orjson.loads(headers_text) if headers_text else {}
                    headers = decoded[headers_text] = [(k, str(v).encode()) for k, v in parsed.items()]
                if append(key=key_bytes, value=payload, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    append = batch.append
                    if append(key=key_bytes, value=payload, timestamp=None, headers=headers) is None:
                        # Larger than a whole batch: let send() handle (or refuse) it on its own.
                        futures.append(
                            await producer.send(topic, payload, key=key_bytes, partition=partition, headers=headers)
                        )
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures, counts

    def _chooser(self, topic: str, partitions: set[int]) -> Callable[[str | None], int]:
        """The partition ``send`` would choose for a key of ``topic`` (remembered per key while the
        topic keeps its number of partitions)."""
        assert self.producer is not None
        all_partitions = list(partitions)
        available = list(self.producer.client.cluster.available_partitions_for_topic(topic) or ())
        known = self._partitions.get(topic)
        if known is None or known[0] != len(all_partitions) or len(known[1]) > 100_000:
            known = self._partitions[topic] = (len(all_partitions), {})
        cache = known[1]
        partitioner = self._partitioner

        def choose(key: str | None) -> int:
            if key is None:
                return int(partitioner(None, all_partitions, available))
            partition = cache.get(key)
            if partition is None:
                partition = cache[key] = int(partitioner(key.encode(), all_partitions, available))
            return partition

        return choose

    async def measure(self) -> None:
        async with self.sessionmaker() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.extract("epoch", func.now() - func.min(self.table.c.created_at)))
                )
            ).one()
        OUTBOX_BACKLOG.labels(schema=str(self.table.schema)).set(count)
        OUTBOX_OLDEST_AGE.labels(schema=str(self.table.schema)).set(float(oldest or 0))

    async def run(self) -> None:
        """Relay until :meth:`stop`; then flush what is left, so a clean shutdown leaves nothing behind."""
        self._wakes = [asyncio.Event() for _ in range(max(self.parallel, 1))]
        await asyncio.gather(*(self._run(wake, measure=n == 0) for n, wake in enumerate(self._wakes)))

    async def _run(self, wake: asyncio.Event, *, measure: bool) -> None:
        backoff = self.poll_seconds
        measured = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                n = await self.relay_once()
                backoff = self.poll_seconds
                if measure and loop.time() - measured > 5:
                    measured = loop.time()
                    await self.measure()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                n = 0
                backoff = min(backoff * 2, 5.0)
            if self._stopping.is_set() and n == 0:
                return
            if n == 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=backoff)


def decode_headers(raw: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (raw or ())}
