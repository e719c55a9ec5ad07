"""The shared messaging layer against the real broker and the real database: inbox dedupe, offsets
committed after the transaction, bounded retries then the DLQ, and the outbox relay's per-key order."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from arrears_ingest.models import inbox as ingest_inbox
from arrears_ingest.models import outbox as ingest_outbox
from arrears_scoring.models import outbox as scoring_outbox
from arrears_shared.db import make_sessionmaker
from arrears_shared.errors import PermanentError
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.messaging.consumer import BatchConsumer, EventRouter
from arrears_shared.messaging.kafka import make_consumer
from arrears_shared.messaging.outbox import Outbox, OutboxRelay
from arrears_shared.settings import CommonSettings
from arrears_shared.topics import DLQ

RELAYS = 2


async def create_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"test.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def event(type_: str, subject: str = "ACC-1", id_: str | None = None) -> CloudEvent:
    return new_event(type=type_, source="test", subject=subject, data={"n": 1}, time=datetime.now(UTC), id=id_)


async def produce(bootstrap: str, topic: str, values: list[bytes], key: bytes = b"ACC-1") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def test_consumer_applies_once_retries_then_dead_letters_and_commits(broker: str, engine: AsyncEngine) -> None:
    topic = await create_topic(broker)
    group = f"test-{uuid.uuid4().hex[:8]}"
    ok = event("test.ok")
    messages = [
        ok.to_json(),
        ok.to_json(),  # the same event again: a duplicate
        b"{not json",  # cannot be decoded: dead-lettered, never blocks the partition
        event("test.fail").to_json(),  # the handler always raises: retried, then dead-lettered
        event("test.reject").to_json(),  # permanent error: dead-lettered at once
        event("test.unknown").to_json(),  # no route: ignored
        event("test.ok", id_="second").to_json(),
    ]
    await produce(broker, topic, messages)

    applied: list[str] = []
    attempts: dict[str, int] = defaultdict(int)
    router = EventRouter()

    async def on_ok(_s: AsyncSession, ev: CloudEvent, _d: Any) -> None:
        applied.append(ev.id)

    async def on_fail(_s: AsyncSession, ev: CloudEvent, _d: Any) -> None:
        attempts[ev.id] += 1
        raise RuntimeError("boom for jane@example.com")  # personal data must not reach the DLQ reason

    async def on_reject(_s: AsyncSession, _ev: CloudEvent, _d: Any) -> None:
        raise PermanentError("unusable")

    router.add("test.ok", None, on_ok)
    router.add("test.fail", None, on_fail)
    router.add("test.reject", None, on_reject)
    settings = CommonSettings(kafka_bootstrap_servers=broker)
    sessionmaker = make_sessionmaker(engine)

    def consumer() -> BatchConsumer:
        return BatchConsumer(
            consumer=make_consumer(settings, group, [topic], "test"),
            group_id=group,
            sessionmaker=sessionmaker,
            inbox=ingest_inbox,
            outbox=Outbox(ingest_outbox),
            router=router,
            max_retries=2,
        )

    first = consumer()
    task = asyncio.create_task(first.run())
    try:
        async with asyncio.timeout(60):
            while len(applied) < 2:  # noqa: ASYNC110 - polling the handler's effect is the point
                await asyncio.sleep(0.1)
    finally:
        first.stop()
        await task

    assert applied == [ok.id, "second"]
    assert list(attempts.values()) == [3]  # the first try and two retries
    async with sessionmaker() as s:
        rows = (await s.execute(select(ingest_outbox).where(ingest_outbox.c.topic == DLQ))).all()
        dlq = [r for r in rows if r.headers.get("dlq.consumer.group") == group]
        kinds = sorted(r.headers["dlq.error.kind"] for r in dlq)
        assert kinds == ["failed", "invalid_envelope", "rejected"]
        for row in dlq:
            assert row.headers["dlq.original.topic"] == topic
            assert row.headers["dlq.original.partition"] == "0"
            assert int(row.headers["dlq.original.offset"]) in range(len(messages))
            assert "jane@example.com" not in row.headers["dlq.error"]
        poison = next(r for r in dlq if r.headers["dlq.error.kind"] == "invalid_envelope")
        assert poison.payload == b"{not json"  # unchanged
        failed = next(r for r in dlq if r.headers["dlq.error.kind"] == "failed")
        assert "[email]" in failed.headers["dlq.error"]

    # Offsets were committed after the transaction: a new member of the group re-applies nothing.
    check = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await check.start()
    try:
        committed = await check.committed(TopicPartition(topic, 0))
    finally:
        await check.stop()
    assert committed == len(messages)

    async with sessionmaker() as s, s.begin():
        await s.execute(delete(ingest_outbox).where(ingest_outbox.c.topic == DLQ))
        await s.execute(delete(ingest_inbox).where(ingest_inbox.c.consumer == group))


async def test_redelivery_after_a_lost_commit_changes_nothing(broker: str, engine: AsyncEngine) -> None:
    """If a process dies after its transaction but before the offset commit, the inbox absorbs the replay."""
    topic = await create_topic(broker)
    group = f"test-{uuid.uuid4().hex[:8]}"
    await produce(broker, topic, [event("test.ok", id_=f"e{i}").to_json() for i in range(5)])
    applied: list[str] = []
    router = EventRouter()

    async def on_ok(_s: AsyncSession, ev: CloudEvent, _d: Any) -> None:
        applied.append(ev.id)

    router.add("test.ok", None, on_ok)
    CommonSettings(kafka_bootstrap_servers=broker)
    sessionmaker = make_sessionmaker(engine)
    for _ in range(2):
        # Nothing is committed, so the second run reads from offset 0 again (partition assigned by
        # hand, without a group, as after a crash before the commit).
        kafka = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, auto_offset_reset="earliest")
        bc = BatchConsumer(
            consumer=kafka,
            group_id=group,
            sessionmaker=sessionmaker,
            inbox=ingest_inbox,
            outbox=Outbox(ingest_outbox),
            router=router,
        )
        await kafka.start()
        kafka.assign([TopicPartition(topic, 0)])
        try:
            async with asyncio.timeout(30):
                done = 0
                while done < 5:
                    batches = await kafka.getmany(timeout_ms=500)
                    for tp, msgs in batches.items():
                        assert await bc._apply_partition_batch(tp, msgs)
                        done += len(msgs)
        finally:
            await kafka.stop()
    assert applied == [f"e{i}" for i in range(5)]
    async with sessionmaker() as s, s.begin():
        await s.execute(delete(ingest_inbox).where(ingest_inbox.c.consumer == group))


async def test_outbox_relays_in_order_per_key_with_two_relays(broker: str, engine: AsyncEngine) -> None:
    topic = await create_topic(broker, partitions=3)
    sessionmaker = make_sessionmaker(engine)
    outbox = Outbox(scoring_outbox)
    keys = [f"ACC-{i}" for i in range(7)]
    async with sessionmaker() as s, s.begin():
        for n in range(700):
            ev = event("test.seq", subject=keys[n % 7], id_=f"seq-{n}")
            await outbox.add(s, topic, ev.model_copy(update={"data": {"n": n}}))
    settings = CommonSettings(kafka_bootstrap_servers=broker)
    from arrears_shared.messaging.kafka import make_producer

    producers = [make_producer(settings, f"relay-{i}") for i in range(RELAYS)]
    for p in producers:
        await p.start()
    try:
        relays = [OutboxRelay(scoring_outbox, sessionmaker, p, batch=50) for p in producers]

        async def drain(relay: OutboxRelay) -> int:
            total = 0
            while (n := await relay.relay_once()) > 0:
                total += n
            return total

        sent = await asyncio.gather(*(drain(r) for r in relays))
    finally:
        for p in producers:
            await p.stop()
    assert sum(sent) == 700
    async with sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(scoring_outbox)) == 0

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=f"check-{uuid.uuid4().hex[:6]}"
    )
    await consumer.start()
    seen: dict[str, list[int]] = defaultdict(list)
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in seen.values()) < 700:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        seen[m.key.decode()].append(orjson.loads(m.value)["data"]["n"])
    finally:
        await consumer.stop()
    for key, ns in seen.items():
        assert ns == sorted(ns), f"events of {key} out of order"
        assert len(ns) == 100


async def test_nothing_is_emitted_for_a_rolled_back_change(engine: AsyncEngine) -> None:
    sessionmaker = make_sessionmaker(engine)
    outbox = Outbox(scoring_outbox)

    async def failing_change() -> None:
        async with sessionmaker() as s, s.begin():
            await outbox.add(s, "anything", event("test.rollback"))
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        await failing_change()
    async with sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(scoring_outbox)) == 0


async def test_relay_batches_land_where_send_would_put_them_with_their_headers(
    broker: str, engine: AsyncEngine
) -> None:
    """Rows go out as one record batch per partition: each key on the partition the producer's default
    partitioner gives it (as ``send`` would), in order, with its headers; a row without a key goes out too."""
    from aiokafka.partitioner import DefaultPartitioner

    from arrears_shared.messaging.kafka import make_producer

    topic = await create_topic(broker, partitions=3)
    sessionmaker = make_sessionmaker(engine)
    outbox = Outbox(scoring_outbox)
    keys = [f"KEY-{i}" for i in range(10)]
    async with sessionmaker() as s, s.begin():
        await outbox.add_payloads(
            s,
            [(topic, keys[n % 10], orjson.dumps({"n": n})) for n in range(300)],
            headers={"origin": "test"},
        )
        await outbox.add_payloads(s, [(topic, None, orjson.dumps({"n": 300}))])
    producer = make_producer(CommonSettings(kafka_bootstrap_servers=broker), "relay-batches")
    await producer.start()
    try:
        relay = OutboxRelay(scoring_outbox, sessionmaker, producer, batch=120)
        sent = 0
        while (n := await relay.relay_once()) > 0:
            sent += n
    finally:
        await producer.stop()
    assert sent == 301

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=f"check-{uuid.uuid4().hex[:6]}"
    )
    await consumer.start()
    seen: dict[str | None, list[int]] = defaultdict(list)
    partitioner = DefaultPartitioner()
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in seen.values()) < 301:
                for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                    for m in msgs:
                        key = m.key.decode() if m.key is not None else None
                        seen[key].append(orjson.loads(m.value)["n"])
                        if key is not None:
                            assert tp.partition == partitioner(m.key, [0, 1, 2], [0, 1, 2])
                            assert dict(m.headers)["origin"] == b"test"
    finally:
        await consumer.stop()
    assert seen.pop(None) == [300]
    for key, ns in seen.items():
        assert ns == sorted(ns) and len(ns) == 30, key


async def test_parallel_relay_rounds_keep_the_order_per_key(broker: str, engine: AsyncEngine) -> None:
    """Several rounds at once, each over its own share of the shards, still publish a key's events in order."""
    from arrears_shared.messaging.kafka import make_producer

    topic = await create_topic(broker, partitions=3)
    sessionmaker = make_sessionmaker(engine)
    outbox = Outbox(scoring_outbox)
    keys = [f"PAR-{i}" for i in range(20)]
    async with sessionmaker() as s, s.begin():
        await outbox.add_payloads(s, [(topic, keys[n % 20], orjson.dumps({"n": n})) for n in range(1000)])
    producer = make_producer(CommonSettings(kafka_bootstrap_servers=broker), "relay-parallel")
    await producer.start()
    relays = [OutboxRelay(scoring_outbox, sessionmaker, producer, batch=40, parallel=3) for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        async with asyncio.timeout(60):
            while True:
                async with sessionmaker() as s:
                    if await s.scalar(select(func.count()).select_from(scoring_outbox)) == 0:
                        break
                await asyncio.sleep(0.2)
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=f"check-{uuid.uuid4().hex[:6]}"
    )
    await consumer.start()
    seen: dict[str, list[int]] = defaultdict(list)
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in seen.values()) < 1000:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        seen[m.key.decode()].append(orjson.loads(m.value)["n"])
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(keys)
    for key, ns in seen.items():
        assert ns == sorted(ns) and len(ns) == 50, key


async def test_rows_stay_in_the_outbox_when_publishing_fails(
    broker: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay deletes the rows it takes in the statement that claims them, but the deletion commits only
    once the broker has acknowledged them: a failed publish leaves every row for the next round, in order."""
    from aiokafka.errors import KafkaError

    from arrears_shared.messaging.kafka import make_producer

    topic = await create_topic(broker, partitions=3)
    sessionmaker = make_sessionmaker(engine)
    outbox = Outbox(scoring_outbox)
    keys = [f"FAIL-{i}" for i in range(4)]
    async with sessionmaker() as s, s.begin():
        await outbox.add_payloads(s, [(topic, keys[n % 4], orjson.dumps({"n": n})) for n in range(40)])
    producer = make_producer(CommonSettings(kafka_bootstrap_servers=broker), "relay-fails")
    await producer.start()
    try:
        relay = OutboxRelay(scoring_outbox, sessionmaker, producer, batch=25)

        async def refused(*_: Any, **__: Any) -> Any:
            raise KafkaError("the broker refused the batch")

        with monkeypatch.context() as patched:
            patched.setattr(producer, "send_batch", refused)
            with pytest.raises(KafkaError):
                await relay.relay_once()
        async with sessionmaker() as s:
            assert await s.scalar(select(func.count()).select_from(scoring_outbox)) == 40
        sent = 0
        while (n := await relay.relay_once()) > 0:
            sent += n
    finally:
        await producer.stop()
    assert sent == 40

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=f"check-{uuid.uuid4().hex[:6]}"
    )
    await consumer.start()
    seen: dict[str, list[int]] = defaultdict(list)
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in seen.values()) < 40:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        seen[m.key.decode()].append(orjson.loads(m.value)["n"])
    finally:
        await consumer.stop()
    assert sorted(seen) == keys
    for key, ns in seen.items():
        assert ns == sorted(ns) and len(ns) == 10, key
