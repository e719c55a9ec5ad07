"""Consume CloudEvents from Kafka in batches, apply each exactly once in effect, and commit offsets
only after the database transaction that applied them has committed.

For each partition batch, in one transaction:
1. decode the envelope (undecodable: dead-lettered with the reason),
2. record every event's identity in the inbox in one statement (already there: a duplicate, skipped),
3. validate ``data`` into the route's model before any logic runs (invalid: dead-lettered),
4. run the handler in a savepoint, retrying a failing handler a bounded number of times and then
   dead-lettering the message, so a poison message never blocks its partition.
A route registered with :meth:`EventRouter.add_batch` takes a whole run of consecutive events of the
batch in one call (one savepoint): each event is still deduplicated and validated on its own (an
invalid one dead-lettered alone), and if the batch handler raises, its savepoint is rolled back and
the run is applied again one event at a time through step 4, so a poison message costs only itself.
Dead letters go through the outbox, in the same transaction, so the DLQ entry and the offset move
together. If the transaction itself fails (database down), nothing is committed, the consumer seeks
back and tries the batch again after a backoff: an outage is not a reason to dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Union

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from asyncpg.exceptions._base import DataError as _AsyncpgDataError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy import Table, Text, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arrears_shared.errors import PermanentError, summarize_validation_error
from arrears_shared.events.envelope import CloudEvent, typed_envelope
from arrears_shared.logs import event_id_var, redact
from arrears_shared.messaging.outbox import Outbox, decode_headers
from arrears_shared.metrics import BATCH_SECONDS, CONSUMED, CONSUMER_LAG, DEAD_LETTERED, RETRIES
from arrears_shared.topics import DLQ
from arrears_shared.tracing import traced, tracing_enabled

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, CloudEvent, Any], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[tuple[CloudEvent, Any]]], Awaitable[None]]
"""Applies a run of consecutive events, each with its validated data, in order, in one call."""


@dataclass(frozen=True)
class Route:
    model: type[BaseModel] | None
    handler: Handler
    batch: BatchHandler | None = None  # set by add_batch: consecutive events of batch routes go together


class EventRouter:
    """Maps event types to (model, handler). A fallback route takes every other type."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.fallback: Route | None = None
        self._typed: dict[str, type[CloudEvent]] = {}  # types decoded with their data (add_batch(typed=True))
        self._decoder: TypeAdapter[Any] | None = None

    def add(self, event_type: str, model: type[BaseModel] | None, handler: Handler) -> None:
        self.routes[event_type] = Route(model, handler)

    def add_batch(
        self, model_by_type: Mapping[str, type[BaseModel] | None], handler: BatchHandler, *, typed: bool = False
    ) -> None:
        """Route every type of ``model_by_type`` to ``handler``, which receives a whole run of
        consecutive events of these types (with their validated data) in one call. If it raises,
        the run is applied again one event at a time (a one-event list each), with retries and the
        DLQ as for :meth:`add`; so the handler must be all-or-nothing within its savepoint.

        ``typed``: decode these events envelope and data together, in one validation straight from
        the message's bytes (:meth:`decode`); the handler's events then carry their data as the
        model instance (``event.data`` is the data it receives, not a dict). The outcome for an
        invalid event is the same (its envelope and data are judged again as without ``typed``)."""

        async def one(session: AsyncSession, event: CloudEvent, data: Any) -> None:
            await handler(session, [(event, data)])

        for event_type, model in model_by_type.items():
            self.routes[event_type] = Route(model, one, handler)
            if typed and model is not None:
                self._typed[event_type] = typed_envelope(model, event_type)
                self._decoder = None
            elif self._typed.pop(event_type, None) is not None:
                self._decoder = None

    def decode(self, raw: bytes) -> CloudEvent:
        """The message's envelope (:meth:`CloudEvent.from_json`); for a type registered with
        ``add_batch(typed=True)`` whose data is valid, the envelope with its data already validated
        into the route's model, in one call. Raises ValidationError if the envelope is invalid."""
        if self._typed:
            if self._decoder is None:
                kinds = tuple(self._typed.values())
                union: Any = kinds[0] if len(kinds) == 1 else Annotated[Union[kinds], Field(discriminator="type")]  # noqa: UP007
                self._decoder = TypeAdapter(union)
            try:
                event: CloudEvent = self._decoder.validate_json(raw)
                return event
            except ValidationError:
                pass  # another type, or invalid: judged as without typed decoding
        return CloudEvent.from_json(raw)

    def on(self, event_type: str, model: type[BaseModel] | None) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(event_type, model, handler)
            return handler

        return register

    def match(self, event_type: str) -> Route | None:
        return self.routes.get(event_type, self.fallback)


def _decoded_data(event: CloudEvent, route: Route) -> Any | None:
    """The event's data if :meth:`EventRouter.decode` already validated it into the route's model."""
    data: Any = event.data
    return data if route.model is not None and type(data) is route.model else None


def _valid_data(event: CloudEvent, route: Route) -> Any | None:
    """The event's data as the route's model when it is valid (as :meth:`BatchConsumer._validate`
    would accept it), else None; dead-lettering is left to ``_validate``."""
    if route.model is None:
        return event
    data = _decoded_data(event, route)
    if data is None:
        try:
            data = route.model.model_validate(event.data)
        except ValidationError:
            return None
    account_id = getattr(data, "account_id", None)
    if account_id is not None and event.subject is not None and event.subject != account_id:
        return None
    return data


class _Infrastructure(Exception):
    """The database connection failed: retry the whole batch, do not dead-letter."""


def is_infrastructure(exc: BaseException) -> bool:
    """The database connection failed: retry the batch later rather than dead-letter anything.

    A value the driver cannot encode (e.g. an integer beyond bigint) is the event's fault, not the
    connection's: retrying would stall the partition forever. asyncpg reports it as a DataError,
    which SQLAlchemy wraps as a DBAPIError; should it come as asyncpg's client-side DataError (an
    InterfaceError subclass), it is still not infrastructure."""
    if isinstance(exc, OperationalError | InterfaceError):
        return not _driver_data_error(exc)
    return bool(getattr(exc, "connection_invalidated", False))


def _driver_data_error(exc: BaseException) -> bool:
    seen: BaseException | None = getattr(exc, "orig", None) or exc
    for _ in range(4):  # the driver's exception sits under SQLAlchemy's adapter, as its cause
        if seen is None:
            return False
        if isinstance(seen, _AsyncpgDataError):
            return True
        seen = seen.__cause__
    return False


async def start_consumer(consumer: AIOKafkaConsumer, group_id: str, stopping: asyncio.Event) -> bool:
    """Start ``consumer``, retrying with backoff while Kafka is unreachable; False if stopped first."""
    delay = 0.5
    while not stopping.is_set():
        try:
            await consumer.start()
            return True
        except KafkaError:
            log.warning("kafka not reachable; retrying", extra={"group": group_id})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)
    return False


async def dead_letter(
    session: AsyncSession,
    outbox: Outbox,
    msg: ConsumerRecord[bytes, bytes],
    *,
    group_id: str,
    kind: str,
    reason: str,
    event_type: str,
) -> None:
    """Send ``msg`` unchanged to the DLQ through the outbox, with headers naming where it came from and why."""
    reason = redact(reason)[:1000]
    headers = {
        "dlq.original.topic": msg.topic,
        "dlq.original.partition": str(msg.partition),
        "dlq.original.offset": str(msg.offset),
        "dlq.consumer.group": group_id,
        "dlq.error.kind": kind,
        "dlq.error": reason,
    }
    key = msg.key.decode(errors="replace") if msg.key is not None else None
    await outbox.add_raw(session, DLQ, msg.value or b"", key=key, headers=headers)
    DEAD_LETTERED.labels(topic=msg.topic, kind=kind).inc()
    CONSUMED.labels(topic=msg.topic, type=event_type, outcome="dead_lettered").inc()
    log.warning("dead-lettered", extra={"topic": msg.topic, "offset": msg.offset, "kind": kind, "reason": reason})


class BatchConsumer:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        group_id: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        inbox: Table,
        outbox: Outbox,
        router: EventRouter,
        max_retries: int = 3,
        batch_size: int = 500,
        after_commit: Callable[[], None] | None = None,
        one_transaction_per_poll: bool = False,
    ) -> None:
        """``one_transaction_per_poll``: apply the batches of every partition a poll returned in one
        transaction (one inbox statement, consecutive batch-route events of all of them in one call)
        instead of one transaction per partition: fewer round trips per event, for consumers whose
        effects on different partitions never conflict (keyed by the partition key). If it fails,
        every partition of the poll is tried again, exactly as a single partition is otherwise."""
        self.one_transaction_per_poll = one_transaction_per_poll
        self.consumer = consumer
        self.group_id = group_id
        self.sessionmaker = sessionmaker
        self.inbox = inbox
        self.outbox = outbox
        self.router = router
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.after_commit = after_commit
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def _start(self) -> None:
        if await start_consumer(self.consumer, self.group_id, self._stopping):
            self.started.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; finish and commit the batch in hand, then leave the group."""
        await self._start()
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.batch_size)
                if not batches:
                    continue
                offsets: dict[TopicPartition, int] = {}
                failed = False
                groups = [list(batches.items())]
                if not self.one_transaction_per_poll:
                    groups = [[item] for item in batches.items()]
                for group in groups:
                    with BATCH_SECONDS.labels(group=self.group_id).time():
                        ok = await self._apply_partition_batch(group[0][0], [m for _, msgs in group for m in msgs])
                    for tp, msgs in group:
                        if ok:
                            offsets[tp] = msgs[-1].offset + 1
                        else:
                            failed = True
                            self.consumer.seek(tp, msgs[0].offset)
                if offsets:
                    try:
                        await self.consumer.commit(offsets)
                    except (CommitFailedError, KafkaError):
                        log.warning("offset commit failed (rebalance?); the inbox absorbs re-delivery")
                    if self.after_commit:
                        self.after_commit()
                    self._record_lag(offsets)
                if failed:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10)
                else:
                    backoff = 0.5
        finally:
            await self.consumer.stop()

    def _record_lag(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, position in offsets.items():
            high = self.consumer.highwater(tp)
            if high is not None:
                CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition), group=self.group_id).set(
                    max(high - position, 0)
                )

    async def _apply_partition_batch(self, tp: TopicPartition, msgs: list[ConsumerRecord[bytes, bytes]]) -> bool:
        try:
            async with self.sessionmaker() as session, session.begin():
                await self._apply(session, tp, msgs)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "batch failed; will retry", extra={"topic": tp.topic, "partition": tp.partition, "group": self.group_id}
            )
            return False

    async def _apply(self, session: AsyncSession, tp: TopicPartition, msgs: list[ConsumerRecord[bytes, bytes]]) -> None:
        decoded: list[tuple[ConsumerRecord[bytes, bytes], CloudEvent | None, str, str]] = []
        for msg in msgs:
            try:
                event = self.router.decode(msg.value or b"")
                decoded.append((msg, event, event.dedupe_key, ""))
            except ValidationError as exc:
                # Keyed by position, so a re-delivered poison message is not dead-lettered twice.
                position = f"kafka:{msg.topic}:{msg.partition}:{msg.offset}"
                decoded.append((msg, None, position, "invalid CloudEvent: " + summarize_validation_error(exc)))
        # One statement of the same shape whatever the batch size (the keys as one array), so it
        # compiles once instead of once per batch as a multi-row VALUES would.
        keys = select(
            literal(self.group_id, Text),
            func.unnest(bindparam("keys", sorted({d[2] for d in decoded}), type_=ARRAY(Text))),
        )
        stmt = (
            pg_insert(self.inbox)
            .from_select(["consumer", "event_key"], keys)
            .on_conflict_do_nothing()
            .returning(self.inbox.c.event_key)
        )
        fresh = set((await session.execute(stmt)).scalars())
        pending: list[tuple[ConsumerRecord[bytes, bytes], CloudEvent]] = []
        for msg, maybe_event, key, reason in decoded:
            if key not in fresh:
                kind = maybe_event.type if maybe_event else "unknown"
                CONSUMED.labels(topic=msg.topic, type=kind, outcome="duplicate").inc()
                continue
            fresh.discard(key)  # a second copy inside this batch is a duplicate too
            if maybe_event is None:
                await self._dead_letter(session, msg, "invalid_envelope", reason, "unknown")
                continue
            pending.append((msg, maybe_event))
        start = 0
        while start < len(pending):
            route = self.router.match(pending[start][1].type)
            end = start + 1
            if route is not None and route.batch is not None:
                while end < len(pending):
                    following = self.router.match(pending[end][1].type)
                    if following is None or following.batch != route.batch:
                        break
                    end += 1
            if route is not None and route.batch is not None and end - start > 1:
                await self._apply_run(session, route.batch, pending[start:end])
            else:
                for msg, event in pending[start:end]:
                    with self._event_context(msg, event):
                        await self._apply_one(session, msg, event)
            start = end

    @contextmanager
    def _event_context(self, msg: ConsumerRecord[bytes, bytes], event: CloudEvent) -> Iterator[None]:
        """The event's id in the logs and its trace span (continuing the producer's trace)."""
        token = event_id_var.set(event.id)
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.destination.name": msg.topic,
            "messaging.consumer.group.name": self.group_id,
            "messaging.kafka.offset": msg.offset,
            "messaging.message.id": event.id,
            "cloudevents.event_type": event.type,
        }
        try:
            with traced(
                f"process {msg.topic}", decode_headers(msg.headers), kind=SpanKind.CONSUMER, attributes=attributes
            ):
                yield
        finally:
            event_id_var.reset(token)

    async def _apply_run(
        self,
        session: AsyncSession,
        batch: BatchHandler,
        run: list[tuple[ConsumerRecord[bytes, bytes], CloudEvent]],
    ) -> None:
        """Validate each event of the run (the invalid ones dead-lettered alone), apply the valid ones
        in one call in one savepoint; if that fails, apply them one at a time as :meth:`_apply_one`."""
        valid: list[tuple[ConsumerRecord[bytes, bytes], CloudEvent, Any, Route]] = []
        spans = tracing_enabled()
        for msg, event in run:
            route = self.router.match(event.type)
            if route is None:  # not possible in a run; kept for the type checker
                continue
            if not spans:
                # Without tracing the event's context only matters if it is dead-lettered: the
                # valid majority skips building it (the invalid ones go through _validate below).
                data = _valid_data(event, route)
                if data is not None:
                    valid.append((msg, event, data, route))
                    continue
            with self._event_context(msg, event):
                ok, data = await self._validate(session, msg, event, route)
            if ok:
                valid.append((msg, event, data, route))
        if not valid:
            return
        try:
            async with session.begin_nested():
                await batch(session, [(event, data) for _, event, data, _ in valid])
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            log.warning(
                "batch handler failed; applying its events one at a time",
                extra={"events": len(valid), "error": type(exc).__name__, "group": self.group_id},
            )
            for msg, event, data, route in valid:
                with self._event_context(msg, event):
                    await self._handle(session, msg, event, route.handler, data)
            return
        applied = Counter((msg.topic, event.type) for msg, event, _, _ in valid)
        for (topic, event_type), count in applied.items():
            CONSUMED.labels(topic=topic, type=event_type, outcome="applied").inc(count)

    async def _apply_one(self, session: AsyncSession, msg: ConsumerRecord[bytes, bytes], event: CloudEvent) -> None:
        route = self.router.match(event.type)
        if route is None:
            CONSUMED.labels(topic=msg.topic, type=event.type, outcome="ignored").inc()
            return
        ok, data = await self._validate(session, msg, event, route)
        if ok:
            await self._handle(session, msg, event, route.handler, data)

    async def _validate(
        self, session: AsyncSession, msg: ConsumerRecord[bytes, bytes], event: CloudEvent, route: Route
    ) -> tuple[bool, Any]:
        """The event's data as the route's model (the event itself without one); invalid: dead-lettered."""
        if route.model is None:
            return True, event
        data = _decoded_data(event, route)
        if data is None:
            try:
                data = route.model.model_validate(event.data)
            except ValidationError as exc:
                reason = "invalid data: " + summarize_validation_error(exc, ("data",))
                await self._dead_letter(session, msg, "invalid_data", reason, event.type)
                return False, None
        account_id = getattr(data, "account_id", None)
        if account_id is not None and event.subject is not None and event.subject != account_id:
            await self._dead_letter(session, msg, "invalid_data", "subject differs from data.account_id", event.type)
            return False, None
        return True, data

    async def _handle(
        self, session: AsyncSession, msg: ConsumerRecord[bytes, bytes], event: CloudEvent, handler: Handler, data: Any
    ) -> None:
        """Run the handler in a savepoint; retry a bounded number of times, then dead-letter."""
        for attempt in range(self.max_retries + 1):
            try:
                async with session.begin_nested():
                    await handler(session, event, data)
                CONSUMED.labels(topic=msg.topic, type=event.type, outcome="applied").inc()
                return
            except PermanentError as exc:
                await self._dead_letter(session, msg, "rejected", str(exc), event.type)
                return
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                if attempt >= self.max_retries:
                    log.exception("handler failed after retries", extra={"event_type": event.type})
                    await self._dead_letter(session, msg, "failed", f"{type(exc).__name__}: {exc}", event.type)
                    return
                RETRIES.labels(topic=msg.topic).inc()
                await asyncio.sleep(0.05 * 2**attempt)

    async def _dead_letter(
        self, session: AsyncSession, msg: ConsumerRecord[bytes, bytes], kind: str, reason: str, event_type: str
    ) -> None:
        await dead_letter(
            session, self.outbox, msg, group_id=self.group_id, kind=kind, reason=reason, event_type=event_type
        )
