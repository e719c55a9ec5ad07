"""ARREARS_ROLE=relay and ARREARS_OUTBOX_RELAY=false: one process consumes and writes the outbox, another only
relays it, so the two use different cores. Real broker and database."""

from __future__ import annotations

import asyncio
import importlib

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError
from sqlalchemy import func, select

from arrears_case_manager.settings import CaseSettings
from arrears_ingest.app import create_app as ingest_app
from arrears_ingest.models import inbox, outbox
from arrears_ingest.settings import IngestSettings
from arrears_notifier.settings import NotifierSettings
from arrears_scoring.settings import ScoringSettings
from arrears_shared.runtime import Runtime
from arrears_shared.settings import CommonSettings
from tests.conftest import Databases, migrated_database
from tests.integration.test_messaging import create_topic, event

NOWHERE = "postgresql://localhost/none"


@pytest.mark.parametrize(
    ("service", "settings_class"),
    [
        ("ingest", IngestSettings),
        ("case_manager", CaseSettings),
        ("scoring", ScoringSettings),
        ("notifier", NotifierSettings),
    ],
)
def test_the_relay_role_runs_only_the_relay_and_serves_no_api(service: str, settings_class: type) -> None:
    app_module = importlib.import_module(f"arrears_{service}.app")
    models = importlib.import_module(f"arrears_{service}.models")
    settings = settings_class(database_url=NOWHERE, role="relay", kafka_consumers=3)
    runtime = Runtime(service=service, settings=settings, outbox_table=models.outbox, inbox_table=models.inbox)
    app = app_module.create_app(settings, runtime)
    assert runtime.loop_names == ["outbox-relay"]
    assert runtime.consumer_groups == {}
    paths = {getattr(route, "path", "") for route in app.routes}
    assert not any(p.startswith("/v1/") for p in paths), "a relay process serves probes and metrics only"
    assert {"/healthz", "/readyz", "/metrics"} <= paths


def test_a_worker_without_relay_keeps_its_consumers_and_the_default_keeps_the_relay() -> None:
    assert CommonSettings().outbox_relay is True
    settings = IngestSettings(database_url=NOWHERE, role="worker", outbox_relay=False)
    runtime = Runtime(service="ingest", settings=settings, outbox_table=outbox, inbox_table=inbox)
    ingest_app(settings, runtime)
    assert "consumer:arrears-ingest:0" in [loop.name for loop in runtime._loops]  # ingest's own consumer loops
    assert "arrears-ingest" in runtime.consumer_groups


def test_a_relay_process_cannot_turn_its_relay_off() -> None:
    with pytest.raises(ValidationError, match="role=relay"):
        CommonSettings(role="relay", outbox_relay=False)


async def _outbox_rows(runtime: Runtime, topic: str) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).where(outbox.c.topic == topic))).scalar_one())


@pytest.fixture(scope="module")
def relay_db(databases: Databases, broker: str) -> str:
    """A database of its own: the relay publishes (and so empties) the whole outbox."""
    return migrated_database(databases, broker, "relay_role")


async def test_a_relay_process_publishes_what_a_worker_without_relay_wrote(relay_db: str, broker: str) -> None:
    url = relay_db
    topic = await create_topic(broker, partitions=2)
    events = [event("test.relayed", subject=f"ACC-{n}") for n in range(20)]

    def runtime(**settings: object) -> Runtime:
        config = CommonSettings(database_url=url, kafka_bootstrap_servers=broker, **settings)  # type: ignore[arg-type]
        return Runtime(service="ingest", settings=config, outbox_table=outbox, inbox_table=inbox)

    worker = runtime(role="worker", outbox_relay=False)
    await worker.start()
    try:
        async with worker.sessionmaker() as session, session.begin():
            for ev in events:
                await worker.outbox.add(session, topic, ev)
        worker.relay.wake()  # what a consumer does after its commit
        async with asyncio.timeout(60):
            await worker.producer_ready.wait()  # its producer is up (readiness reports the broker) ...
    finally:
        await worker.stop()  # ... and a relay that ran would have flushed the outbox on stop
    assert await _outbox_rows(runtime(), topic) == len(events), "the worker alone leaves its rows in the outbox"

    relay = runtime(role="relay")
    await relay.start()
    try:
        async with asyncio.timeout(60):
            while await _outbox_rows(relay, topic):  # noqa: ASYNC110 - polling the effect is the point
                await asyncio.sleep(0.1)
    finally:
        await relay.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < len(events):
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    got += [r.value for r in records if r.value is not None]
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(ev.to_json() for ev in events)
