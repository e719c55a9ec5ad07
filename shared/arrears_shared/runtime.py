"""The composition root every service uses: database, producer, outbox relay, consumers and
background loops, started with the HTTP server and stopped cleanly on SIGTERM.

uvicorn owns the process and its signals. On SIGTERM it stops accepting requests and runs the
lifespan's shutdown, where consumers finish and commit the batch in hand, the relay publishes
what is left in the outbox, and the producer flushes. A background loop that dies unexpectedly
takes the process down with it, so Kubernetes restarts it rather than leaving it half-alive.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from arrears_shared.clock import Clock, make_clock
from arrears_shared.db import make_engine, make_sessionmaker, ping
from arrears_shared.logs import configure_logging
from arrears_shared.messaging.consumer import BatchConsumer, EventRouter
from arrears_shared.messaging.kafka import make_consumer, make_producer
from arrears_shared.messaging.outbox import Outbox, OutboxRelay
from arrears_shared.settings import CommonSettings
from arrears_shared.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)

# The cyclic garbage collector's first threshold (container allocations net of frees between young
# collections; Python's default is 700). A consumer holds a few thousand events per batch in flight,
# each a dozen objects that live until the batch is written: with the default, every batch survived
# dozens of young collections and several full ones, about a tenth of ingest's CPU. Almost everything
# is freed by reference counting anyway, so collecting rarely costs little memory.
GC_THRESHOLD = (50_000, 20, 20)

RELAY_LOOP = "outbox-relay"


def tune_gc() -> None:
    """Collect cyclic garbage rarely, and never rescan what was loaded at start-up (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


@dataclass
class _Loop:
    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    stop: Callable[[], None]
    task: asyncio.Task[None] | None = field(default=None)


class Runtime:
    def __init__(
        self,
        *,
        service: str,
        settings: CommonSettings,
        outbox_table: Table,
        inbox_table: Table,
        clock: Clock | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.engine: AsyncEngine = make_engine(
            settings.database_url, pool_size=settings.database_pool_size, application_name=f"arrears-{service}"
        )
        self.sessionmaker: async_sessionmaker[AsyncSession] = make_sessionmaker(self.engine)
        self.clock: Clock = clock or make_clock(settings.clock_file)
        # aiokafka clients must be created inside the running event loop: see start().
        self.producer: AIOKafkaProducer | None = None
        self.outbox = Outbox(outbox_table)
        self.inbox_table = inbox_table
        self.relay = OutboxRelay(outbox_table, self.sessionmaker, None, poll_seconds=settings.outbox_poll_seconds)
        self.consumers: list[BatchConsumer] = []
        # (group, topics, router, after commit, one transaction per poll) for each consumer to build
        self._consumer_specs: list[tuple[str, list[str], EventRouter, Callable[[], None], bool]] = []
        # Every consumer group this process runs and its topics, however the consumer is built
        # (the Kubernetes manifests' Kafka ACLs and autoscalers are checked against it).
        self.consumer_groups: dict[str, list[str]] = {}
        self.producer_ready = asyncio.Event()
        self._loops: list[_Loop] = []
        self._stopping = False
        # With ARREARS_OUTBOX_RELAY=false the loop only starts the producer (readiness reports the broker
        # through it) and waits for the stop: a role=relay process publishes this outbox.
        self.add_loop(RELAY_LOOP, self._run_relay, self.relay.stop)

    # ------------------------------------------------------------------ composition

    def add_consumer(
        self,
        group_id: str,
        topics: list[str],
        router: EventRouter,
        after_commit: Callable[[], None] | None = None,
        *,
        one_transaction_per_poll: bool = False,
    ) -> None:
        """Consume ``topics`` as ``group_id`` through ``router`` (the consumer is built in :meth:`start`).

        Skipped when the process runs as ``role=api`` or ``role=relay``. ``one_transaction_per_poll``: see
        :class:`BatchConsumer`.
        """
        if not self.runs_consumers:
            return

        def committed() -> None:
            self.relay.wake()
            if after_commit is not None:
                after_commit()

        self._consumer_specs.append((group_id, topics, router, committed, one_transaction_per_poll))
        self.consumer_groups[group_id] = list(topics)

    @property
    def runs_consumers(self) -> bool:
        """Whether this process runs consumers and background loops: not as ``role=api`` or ``role=relay``."""
        return self.settings.role not in ("api", "relay")

    def _consumer_loop_names(self, group_id: str) -> list[str]:
        """``consumer:GROUP`` for the first of the group's consumers in this process, then ``consumer:GROUP:N``."""
        return [f"consumer:{group_id}" + (f":{n}" if n else "") for n in range(self.settings.kafka_consumers)]

    def _build_consumers(self) -> None:
        for group_id, topics, router, committed, per_poll in self._consumer_specs:
            for name in self._consumer_loop_names(group_id):
                consumer = BatchConsumer(
                    consumer=make_consumer(self.settings, group_id, topics, client_id=f"arrears-{self.service}"),
                    group_id=group_id,
                    sessionmaker=self.sessionmaker,
                    inbox=self.inbox_table,
                    outbox=self.outbox,
                    router=router,
                    max_retries=self.settings.kafka_max_retries,
                    batch_size=self.settings.kafka_consumer_batch,
                    after_commit=committed,
                    one_transaction_per_poll=per_poll,
                )
                self.consumers.append(consumer)
                self.add_loop(name, consumer.run, consumer.stop)

    def add_loop(self, name: str, run: Callable[[], Coroutine[Any, Any, None]], stop: Callable[[], None]) -> None:
        """Run a background loop with the process. With ``role=api`` only the outbox relay runs: the API's own
        writes still reach Kafka (the relay is safe in any number of replicas), while consumers and timers stay
        in the worker Deployment. ``role=relay`` runs nothing else either (and serves no API)."""
        if not self.runs_consumers and name != RELAY_LOOP:
            return
        self._loops.append(_Loop(name, run, stop))

    @property
    def loop_names(self) -> list[str]:
        """Names of the background loops this process runs (consumers are added in :meth:`start`)."""
        loops = [lp.name for lp in self._loops if not lp.name.startswith("consumer:")]
        return loops + [name for spec in self._consumer_specs for name in self._consumer_loop_names(spec[0])]

    # ------------------------------------------------------------------ lifecycle

    async def _run_relay(self) -> None:
        assert self.producer is not None
        delay = 0.5
        while not self._stopping:
            try:
                await self.producer.start()
                break
            except KafkaError:
                log.warning("kafka not reachable for the producer; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
        self.producer_ready.set()
        if self.settings.outbox_relay:
            await self.relay.run()
        else:
            await self.relay.stopped()

    def _supervise(self, loop: _Loop) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if task.cancelled() or self._stopping:
                return
            exc = task.exception()
            log.error("background loop %s ended unexpectedly; stopping the process", loop.name, exc_info=exc)
            os.kill(os.getpid(), signal.SIGTERM)

        return done

    async def start(self) -> None:
        self.producer = make_producer(self.settings, client_id=f"arrears-{self.service}")
        self.relay.producer = self.producer
        self._build_consumers()
        for loop in self._loops:
            loop.task = asyncio.create_task(loop.run(), name=loop.name)
            loop.task.add_done_callback(self._supervise(loop))

    async def stop(self, timeout: float = 20.0) -> None:
        """Finish in-flight work: consumers commit what they applied, then the outbox is flushed."""
        self._stopping = True
        consumers = [lp for lp in self._loops if lp.name != RELAY_LOOP]
        relay = [lp for lp in self._loops if lp.name == RELAY_LOOP]
        for group in (consumers, relay):
            for lp in group:
                lp.stop()
            tasks = [lp.task for lp in group if lp.task is not None]
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=timeout)
                for task in pending:
                    task.cancel()
        try:
            if self.producer is not None:
                await self.producer.stop()
        except Exception:
            log.debug("producer stop failed", exc_info=True)
        await self.engine.dispose()
        shutdown_tracing()

    async def readiness(self) -> dict[str, bool]:
        broker = self.producer_ready.is_set()
        if broker and self.producer is not None:
            try:
                async with asyncio.timeout(2):
                    await self.producer.client.fetch_all_metadata()
            except Exception:
                broker = False
        return {"database": await ping(self.engine), "broker": broker}

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = self
        await self.start()
        tune_gc()
        try:
            yield
        finally:
            await self.stop()


def serve(app: FastAPI, settings: CommonSettings, port: int, service: str) -> None:
    """Run the service: HTTP on ``port`` plus every background loop of its runtime."""
    configure_logging(service, settings.log_level)
    configure_tracing(service)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        lifespan="on",
    )
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal with the previous
    # handler in place; with this one the process then exits 0, which is what a clean stop is.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.Server(config).run()


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
