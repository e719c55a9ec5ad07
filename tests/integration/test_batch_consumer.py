"""The shared consumer's batch route (EventRouter.add_batch) against the real broker and the real
database: a run of consecutive events applied in one call, duplicates skipped, invalid data
dead-lettered alone, and a poison event inside a run falling back to the per-event path (its
savepoint rolled back, the others applied once each, the poison alone dead-lettered)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from arrears_ingest.models import inbox as ingest_inbox
from arrears_ingest.models import outbox as ingest_outbox
from arrears_shared.db import make_sessionmaker
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.messaging.consumer import BatchConsumer, EventRouter
from arrears_shared.messaging.kafka import make_consumer
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.settings import CommonSettings
from arrears_shared.topics import DLQ
from tests.integration.test_messaging import create_topic, event, produce


class Counted(BaseModel):
    n: int


class Recorder:
    """A batch handler that writes one outbox row per event (so a rolled-back call leaves nothing)
    and raises when the run holds the poison event."""

    def __init__(self, outbox: Outbox, applied_topic: str) -> None:
        self.outbox = outbox
        self.applied_topic = applied_topic
        self.calls: list[list[str]] = []
        self.singles: list[str] = []

    async def batch(self, session: AsyncSession, items: list[tuple[CloudEvent, Any]]) -> None:
        self.calls.append([ev.id for ev, _ in items])
        for ev, data in items:
            assert isinstance(data, Counted)  # validated into the model before the handler runs
            carried: Any = ev.data
            assert carried is data or isinstance(carried, dict)  # typed routes: decoded together
            await self.outbox.add_raw(session, self.applied_topic, b"", key=ev.id, headers={})
        if any(ev.id == "poison" for ev, _ in items):
            raise RuntimeError("poison")

    async def single(self, session: AsyncSession, ev: CloudEvent, _data: Any) -> None:
        self.singles.append(ev.id)
        await self.outbox.add_raw(session, self.applied_topic, b"", key=ev.id, headers={})


async def consume_until(
    broker: str, engine: AsyncEngine, topic: str, group: str, router: EventRouter, done: Any
) -> async_sessionmaker[AsyncSession]:
    settings = CommonSettings(kafka_bootstrap_servers=broker)
    sessionmaker = make_sessionmaker(engine)
    consumer = BatchConsumer(
        consumer=make_consumer(settings, group, [topic], "test"),
        group_id=group,
        sessionmaker=sessionmaker,
        inbox=ingest_inbox,
        outbox=Outbox(ingest_outbox),
        router=router,
        max_retries=2,
    )
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(60):
            while not done():  # noqa: ASYNC110 - polling the handler's effect is the point
                await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task
    return sessionmaker


async def applied_keys(sessionmaker: async_sessionmaker[AsyncSession], topic: str) -> list[str]:
    async with sessionmaker() as s:
        rows = await s.scalars(select(ingest_outbox.c.key).where(ingest_outbox.c.topic == topic))
        return sorted(k for k in rows if k is not None)


async def committed_offset(broker: str, group: str, topic: str) -> int | None:
    check = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await check.start()
    try:
        offset: int | None = await check.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await check.stop()


async def cleanup(sessionmaker: async_sessionmaker[AsyncSession], group: str, applied_topic: str) -> None:
    async with sessionmaker() as s, s.begin():
        await s.execute(delete(ingest_outbox).where(ingest_outbox.c.topic == applied_topic))
        await s.execute(
            delete(ingest_outbox).where(
                ingest_outbox.c.topic == DLQ, ingest_outbox.c.headers["dlq.consumer.group"].astext == group
            )
        )
        await s.execute(delete(ingest_inbox).where(ingest_inbox.c.consumer == group))


@pytest.mark.parametrize("typed", [False, True])
async def test_a_run_of_consecutive_events_is_applied_in_one_call_and_duplicates_are_skipped(
    broker: str, engine: AsyncEngine, typed: bool
) -> None:
    topic = await create_topic(broker)
    group = f"test-{uuid.uuid4().hex[:8]}"
    applied_topic = f"{topic}.applied"
    ids = ["a1", "a2", "one", "a3", "a4"]
    messages = [
        event("test.a", id_="a1").to_json(),
        event("test.b", id_="a2").to_json(),  # another type of the same batch route: same run
        event("test.a", id_="a1").to_json(),  # a duplicate: skipped
        event("test.single", id_="one").to_json(),  # a per-event route ends the run
        event("test.a", id_="a3").to_json(),
        event("test.b", id_="a4").to_json(),
        event("test.a", id_="a3").to_json(),  # a duplicate inside the second run
    ]
    await produce(broker, topic, messages)
    recorder = Recorder(Outbox(ingest_outbox), applied_topic)
    router = EventRouter()
    router.add_batch({"test.a": Counted, "test.b": Counted}, recorder.batch, typed=typed)
    router.add("test.single", Counted, recorder.single)

    sessionmaker = await consume_until(
        broker, engine, topic, group, router, lambda: len(recorder.calls) >= 2 and recorder.singles
    )
    try:
        assert recorder.calls == [["a1", "a2"], ["a3", "a4"]]
        assert recorder.singles == ["one"]
        assert await applied_keys(sessionmaker, applied_topic) == sorted(ids)
        assert await committed_offset(broker, group, topic) == len(messages)
    finally:
        await cleanup(sessionmaker, group, applied_topic)


@pytest.mark.parametrize("typed", [False, True])
async def test_a_poison_event_in_a_run_falls_back_and_is_dead_lettered_alone(
    broker: str, engine: AsyncEngine, typed: bool
) -> None:
    topic = await create_topic(broker)
    group = f"test-{uuid.uuid4().hex[:8]}"
    applied_topic = f"{topic}.applied"
    invalid = new_event(
        type="test.a", source="test", subject="ACC-1", data={"n": "x"}, time=datetime.now(UTC), id="bad"
    )
    messages = [
        event("test.a", id_="g1").to_json(),
        event("test.a", id_="g2").to_json(),
        event("test.a", id_="poison").to_json(),  # the batch handler raises whenever this is in the run
        invalid.to_json(),  # invalid data: dead-lettered at validation, never reaches a handler
        event("test.a", id_="g3").to_json(),
        event("test.a", id_="g1").to_json(),  # a duplicate
    ]
    await produce(broker, topic, messages)
    recorder = Recorder(Outbox(ingest_outbox), applied_topic)
    router = EventRouter()
    router.add_batch({"test.a": Counted}, recorder.batch, typed=typed)

    def done() -> bool:
        return [c for c in recorder.calls if c == ["g3"]] != []

    sessionmaker = await consume_until(broker, engine, topic, group, router, done)
    try:
        # One call for the run; it fails, its savepoint is rolled back, and every event is applied
        # alone: the poison tried three times (max_retries=2), the others once.
        assert recorder.calls == [
            ["g1", "g2", "poison", "g3"],
            ["g1"],
            ["g2"],
            ["poison"],
            ["poison"],
            ["poison"],
            ["g3"],
        ]
        assert await applied_keys(sessionmaker, applied_topic) == ["g1", "g2", "g3"]  # once each
        async with sessionmaker() as s:
            rows = (await s.execute(select(ingest_outbox).where(ingest_outbox.c.topic == DLQ))).all()
        dlq = sorted(
            (r.headers["dlq.error.kind"], r.headers["dlq.original.offset"])
            for r in rows
            if r.headers.get("dlq.consumer.group") == group
        )
        assert dlq == [("failed", "2"), ("invalid_data", "3")]
        assert await committed_offset(broker, group, topic) == len(messages)
    finally:
        await cleanup(sessionmaker, group, applied_topic)


async def test_one_transaction_per_poll_applies_every_partitions_batch_together(
    broker: str, engine: AsyncEngine
) -> None:
    topic = await create_topic(broker, partitions=3)
    group = f"test-{uuid.uuid4().hex[:8]}"
    applied_topic = f"{topic}.applied"
    producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=False)
    await producer.start()
    try:
        for p in range(3):
            for k in range(2):
                await producer.send_and_wait(topic, event("test.a", id_=f"p{p}-{k}").to_json(), partition=p)
        await producer.send_and_wait(topic, event("test.a", id_="p0-0").to_json(), partition=1)  # a duplicate
    finally:
        await producer.stop()
    recorder = Recorder(Outbox(ingest_outbox), applied_topic)
    router = EventRouter()
    router.add_batch({"test.a": Counted}, recorder.batch)
    sessionmaker = make_sessionmaker(engine)
    consumer = BatchConsumer(
        consumer=make_consumer(CommonSettings(kafka_bootstrap_servers=broker), group, [topic], "test"),
        group_id=group,
        sessionmaker=sessionmaker,
        inbox=ingest_inbox,
        outbox=Outbox(ingest_outbox),
        router=router,
        one_transaction_per_poll=True,
    )
    task = asyncio.create_task(consumer.run())
    expected = sorted(f"p{p}-{k}" for p in range(3) for k in range(2))
    try:
        async with asyncio.timeout(60):
            while sorted(i for call in recorder.calls for i in call) != expected:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task
    try:
        # Each event applied once (the duplicate in another partition skipped by the one inbox
        # statement); the partitions that arrived in the same poll went in one call.
        assert await applied_keys(sessionmaker, applied_topic) == expected
        assert any(len({i.split("-")[0] for i in call if i != "p0-0"}) > 1 for call in recorder.calls)
        check = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
        await check.start()
        try:
            committed = [await check.committed(TopicPartition(topic, p)) for p in range(3)]
        finally:
            await check.stop()
        assert committed == [2, 3, 2]
    finally:
        await cleanup(sessionmaker, group, applied_topic)
