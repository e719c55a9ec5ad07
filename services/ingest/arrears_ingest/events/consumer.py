"""Raw ERP CloudEvents published on ar.inbound.v1 get the same checks as POST /v1/events.

Each partition batch is judged as one batch, in one transaction, exactly like an HTTP batch:
valid new events go to the ledger outbox, duplicates (same source and id) change nothing, and an
invalid event or an invoice-number conflict goes to ``collections.dlq.v1`` unchanged, with the
reason in its headers. The (source, id) table is the idempotency record, so re-delivery after a
crash changes nothing; offsets are committed only after the transaction commits. If the
transaction fails (database down), nothing is committed and the batch is read again after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arrears_ingest.events.service import IngestService
from arrears_shared.messaging.consumer import dead_letter, is_infrastructure, start_consumer
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.metrics import BATCH_SECONDS, CONSUMED

log = logging.getLogger(__name__)


class InboundConsumer:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        group_id: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        service: IngestService,
        batch_size: int = 500,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.group_id = group_id
        self.sessionmaker = sessionmaker
        self.outbox = outbox
        self.service = service
        self.batch_size = batch_size
        self.after_commit = after_commit
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        if not await start_consumer(self.consumer, self.group_id, self._stopping):
            return
        self.started.set()
        backoff = 0.5
        # The offsets of a committed batch go to the broker while the next batch is fetched and judged
        # (the broker's answer takes a round trip the judging need not wait for); the next commit
        # waits for it, so commits stay in order.
        committing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.batch_size)
                if not batches:
                    continue
                # Every partition's messages of this poll are judged together, in one transaction:
                # one idempotency insert, one claim of invoice numbers, one outbox insert.
                msgs_all = [m for msgs in batches.values() for m in msgs]
                with BATCH_SECONDS.labels(group=self.group_id).time():
                    ok = await self._apply_batch(msgs_all)
                if not ok:
                    for tp, msgs in batches.items():
                        self.consumer.seek(tp, msgs[0].offset)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10)
                    continue
                backoff = 0.5
                # The outbox rows are committed: the relay may publish them now.
                if self.after_commit:
                    self.after_commit()
                if committing is not None:
                    await committing
                committing = asyncio.create_task(
                    self._commit({tp: msgs[-1].offset + 1 for tp, msgs in batches.items()})
                )
        finally:
            if committing is not None:
                await committing
            await self.consumer.stop()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the offsets of a batch whose transaction has committed (never before)."""
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError):
            log.warning("offset commit failed (rebalance?); the idempotency record absorbs re-delivery")

    async def _apply_batch(self, msgs: list[ConsumerRecord[bytes, bytes]]) -> bool:
        try:
            async with self.sessionmaker() as session, session.begin():
                await self.apply(session, msgs)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_infrastructure(exc) or len(msgs) == 1:
                log.exception("inbound batch failed; will retry", extra={"group": self.group_id})
                return False
        # Not the database being away: one message the checks did not foresee. Judge each message on
        # its own, and dead-letter the one that still fails, so it never blocks its partition.
        log.warning("inbound batch failed; judging its messages one by one", extra={"group": self.group_id})
        for msg in msgs:
            try:
                async with self.sessionmaker() as session, session.begin():
                    await self.apply(session, [msg])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_infrastructure(exc):
                    return False
                log.exception("inbound message failed; dead-lettering it", extra={"offset": msg.offset})
                try:
                    async with self.sessionmaker() as session, session.begin():
                        await self._dead_letter(session, msg, "failed", type(exc).__name__, "unknown")
                except Exception:
                    return False
        return True

    async def apply(self, session: AsyncSession, msgs: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Judge one partition batch inside ``session``'s transaction."""
        items: list[Any] = []
        positions: list[ConsumerRecord[bytes, bytes]] = []
        for msg in msgs:
            try:
                items.append(orjson.loads(msg.value or b""))
                positions.append(msg)
            except orjson.JSONDecodeError:
                await self._dead_letter(session, msg, "undecodable", "the message is not JSON", "unknown")
        results = await self.service.accept(session, items)
        counted: dict[tuple[str, str, str], int] = {}
        for msg, raw, result in zip(positions, items, results, strict=True):
            event_type = str(raw.get("type", "unknown"))[:100] if isinstance(raw, dict) else "unknown"
            if result.status in ("accepted", "duplicate"):
                label = (msg.topic, event_type, "applied" if result.status == "accepted" else "duplicate")
                counted[label] = counted.get(label, 0) + 1
                continue
            kind = "invalid" if result.status == "rejected" else "conflict"
            reason = "; ".join(f"{e['field']}: {e['message']}" for e in result.errors)
            await self._dead_letter(session, msg, kind, reason, event_type)
        # Counted once per label and poll, not once per message (the counters take a lock each time).
        for (topic, event_type, outcome), n in counted.items():
            CONSUMED.labels(topic=topic, type=event_type, outcome=outcome).inc(n)

    async def _dead_letter(
        self, session: AsyncSession, msg: ConsumerRecord[bytes, bytes], kind: str, reason: str, event_type: str
    ) -> None:
        await dead_letter(
            session, self.outbox, msg, group_id=self.group_id, kind=kind, reason=reason, event_type=event_type
        )


class InboundLoop:
    """The consumer as one of the runtime's background loops (aiokafka is built inside the loop)."""

    def __init__(self, make: Callable[[], InboundConsumer]) -> None:
        self._make = make
        self.consumer: InboundConsumer | None = None
        self._stopped = False

    async def run(self) -> None:
        self.consumer = self._make()
        if not self._stopped:
            await self.consumer.run()

    def stop(self) -> None:
        self._stopped = True
        if self.consumer is not None:
            self.consumer.stop()
