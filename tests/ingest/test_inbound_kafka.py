"""Raw ERP CloudEvents on Kafka get the same checks as POST /v1/events: valid ones reach the ledger
outbox once, invalid ones and invoice-number conflicts go to the DLQ with the reason."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from arrears_ingest.events.consumer import InboundConsumer
from arrears_ingest.events.service import IngestService
from arrears_ingest.models import outbox
from arrears_shared.db import make_sessionmaker
from arrears_shared.messaging.kafka import make_consumer
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.settings import CommonSettings, async_database_url
from arrears_shared.topics import DLQ, LEDGER
from tests.integration.test_messaging import create_topic, produce


def invoice(account: str, number: str, invoice_id: str, amount: Any = 1000, id_: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": id_ or str(uuid.uuid4()),
            "source": "erp-kafka",
            "type": "ar.invoice.issued",
            "time": "2026-03-01T12:00:00Z",
            "subject": account,
            "data": {
                "invoice_id": invoice_id,
                "invoice_number": number,
                "account_id": account,
                "issue_date": "2026-03-01",
                "due_date": "2026-03-31",
                "currency": "EUR",
                "amount_minor": amount,
            },
        }
    )


def inbound_consumer(
    broker: str,
    group: str,
    topic: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    service: type[IngestService] = IngestService,
    **options: Any,
) -> InboundConsumer:
    """An InboundConsumer of ``topic`` for ``group`` writing to ingest's outbox through ``service``."""
    box = Outbox(outbox)
    return InboundConsumer(
        consumer=make_consumer(CommonSettings(kafka_bootstrap_servers=broker), group, [topic], "test"),
        group_id=group,
        sessionmaker=sessionmaker,
        outbox=box,
        service=service(box),
        **options,
    )


async def test_inbound_valid_duplicate_invalid_and_conflict(broker: str, ingest_db: str) -> None:
    topic = await create_topic(broker, partitions=1)
    group = f"ingest-test-{uuid.uuid4().hex[:8]}"
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    good = invoice(account, "N-1", "I-1")
    await produce(
        broker,
        topic,
        [
            good,
            good,  # redelivered: changes nothing
            b"{not json",  # undecodable
            invoice(account, "N-2", "I-2", amount=12.5),  # a float: rejected
            invoice(account, "N-1", "I-9"),  # the number belongs to I-1: conflict
        ],
        key=account.encode(),
    )
    engine = create_async_engine(async_database_url(ingest_db))
    sessionmaker = make_sessionmaker(engine)
    consumer = inbound_consumer(broker, group, topic, sessionmaker)
    task = asyncio.create_task(consumer.run())

    async def dead(group: str) -> bool:
        async with sessionmaker() as s:
            found = await s.execute(select(outbox.c.id).where(outbox.c.topic == DLQ, outbox.c.key == account))
            return len(found.all()) >= 3

    async def rows() -> list[Any]:
        async with sessionmaker() as s:
            return list(await s.execute(select(outbox).where(outbox.c.key == account).order_by(outbox.c.id)))

    try:
        async with asyncio.timeout(60):
            while len(await rows()) < 3 or not await dead(group):  # noqa: ASYNC110 - polling the effect is the point
                await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task
    out = await rows()
    await engine.dispose()
    ledger = [orjson.loads(r.payload) for r in out if r.topic == LEDGER]
    dlq = [r for r in out if r.topic == DLQ]
    assert [e["data"]["invoice_id"] for e in ledger] == ["I-1"]
    assert sorted(r.headers["dlq.error.kind"] for r in dlq) == ["conflict", "invalid", "undecodable"]
    reasons = {r.headers["dlq.error.kind"]: r.headers["dlq.error"] for r in dlq}
    assert "amount_minor" in reasons["invalid"]
    assert "invoice number already belongs to invoice I-1" in reasons["conflict"]
    assert all(r.headers["dlq.consumer.group"] == group for r in dlq)


class _Fragile(IngestService):
    """Fails on one event id, as an unforeseen bug would."""

    async def accept(self, session: Any, items: list[Any], *, allowed_source: str | None = None) -> Any:
        if any(isinstance(i, dict) and i.get("id") == "boom" for i in items):
            raise RuntimeError("unforeseen")
        return await super().accept(session, items, allowed_source=allowed_source)


async def test_an_unforeseen_failure_dead_letters_one_message_not_the_partition(broker: str, ingest_db: str) -> None:
    topic = await create_topic(broker, partitions=1)
    group = f"ingest-test-{uuid.uuid4().hex[:8]}"
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    await produce(
        broker,
        topic,
        [
            invoice(account, "N-1", "I-1"),
            invoice(account, "N-2", "I-2", id_="boom"),
            invoice(account, "N-3", "I-3", id_="nul\x00id"),
            invoice(account, "N-4", "I-4"),
        ],
        key=account.encode(),
    )
    engine = create_async_engine(async_database_url(ingest_db))
    sessionmaker = make_sessionmaker(engine)
    consumer = inbound_consumer(broker, group, topic, sessionmaker, _Fragile)
    task = asyncio.create_task(consumer.run())

    async def rows() -> list[Any]:
        async with sessionmaker() as s:
            return list(await s.execute(select(outbox).where(outbox.c.key == account).order_by(outbox.c.id)))

    try:
        async with asyncio.timeout(60):
            while len(await rows()) < 4:  # noqa: ASYNC110 - polling the effect is the point
                await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task
    out = await rows()
    await engine.dispose()
    assert [orjson.loads(r.payload)["data"]["invoice_id"] for r in out if r.topic == LEDGER] == ["I-1", "I-4"]
    kinds = sorted(r.headers["dlq.error.kind"] for r in out if r.topic == DLQ)
    assert kinds == ["failed", "invalid"]


async def test_offsets_are_committed_after_the_transaction_even_when_stopped_right_after(
    broker: str, ingest_db: str
) -> None:
    """A batch's offsets go to the broker while the next batch is judged; stopping waits for them, so
    the group's committed offset ends past every message whose outbox rows committed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = await create_topic(broker, partitions=1)
    group = f"ingest-test-{uuid.uuid4().hex[:8]}"
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    await produce(broker, topic, [invoice(account, f"N-{i}", f"I-{i}") for i in range(6)], key=account.encode())
    engine = create_async_engine(async_database_url(ingest_db))
    sessionmaker = make_sessionmaker(engine)
    committed_batches: list[int] = []
    consumer = inbound_consumer(
        broker,
        group,
        topic,
        sessionmaker,
        batch_size=2,  # three batches: each commit overlaps the next batch's judging
        after_commit=lambda: committed_batches.append(1),
    )
    task = asyncio.create_task(consumer.run())

    async def rows() -> int:
        async with sessionmaker() as s:
            return len((await s.execute(select(outbox.c.id).where(outbox.c.key == account))).all())

    try:
        async with asyncio.timeout(60):
            while await rows() < 6:  # noqa: ASYNC110 - polling the effect is the point
                await asyncio.sleep(0.05)
    finally:
        consumer.stop()
        await task
    await engine.dispose()
    assert len(committed_batches) >= 3  # at most two messages a batch
    check = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await check.start()
    try:
        assert await check.committed(TopicPartition(topic, 0)) == 6
    finally:
        await check.stop()
