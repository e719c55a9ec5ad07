"""Tracing follows one event across services through Kafka headers (real broker, real database), HTTP
requests continue an incoming trace, and spans are exported over OTLP only when configured."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from opentelemetry.trace import SpanKind
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from arrears_case_manager.models import inbox as case_inbox
from arrears_case_manager.models import outbox as case_outbox
from arrears_dev.stack import free_port
from arrears_shared.db import make_sessionmaker
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.http import install_operational_routes
from arrears_shared.logs import trace_id_var
from arrears_shared.messaging.consumer import BatchConsumer, EventRouter
from arrears_shared.messaging.kafka import make_consumer, make_producer
from arrears_shared.messaging.outbox import Outbox, OutboxRelay, decode_headers
from arrears_shared.settings import CommonSettings
from arrears_shared.tracing import configure_tracing, trace_headers, traced, tracing_enabled
from tests.integration.test_messaging import create_topic

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


async def test_trace_follows_an_event_from_topic_to_topic(broker: str, engine: AsyncEngine) -> None:
    """A consumed event's traceparent reaches the events its handler emits, in the outbox and on Kafka;
    an event without one starts a fresh trace that its follow-ups carry too."""
    source, target = await create_topic(broker), await create_topic(broker)
    group = f"test-{uuid.uuid4().hex[:8]}"
    traced_in = new_event(type="test.in", source="test", subject="ACC-T1", data={}, time=datetime.now(UTC))
    untraced_in = new_event(type="test.in", source="test", subject="ACC-T2", data={}, time=datetime.now(UTC))
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        await producer.send_and_wait(
            source, traced_in.to_json(), key=b"ACC-T1", headers=[("traceparent", TRACEPARENT.encode())]
        )
        await producer.send_and_wait(source, untraced_in.to_json(), key=b"ACC-T2")
    finally:
        await producer.stop()

    outbox = Outbox(case_outbox)
    seen_in_handler: dict[str, str | None] = {}
    router = EventRouter()

    async def on_in(session: AsyncSession, ev: CloudEvent, _d: Any) -> None:
        seen_in_handler[ev.subject or ""] = trace_id_var.get()  # what the JSON logs print
        out = new_event(
            type="test.out", source="test", subject=ev.subject, data={"from": ev.id}, time=datetime.now(UTC)
        )
        await outbox.add(session, target, out)

    router.add("test.in", None, on_in)
    settings = CommonSettings(kafka_bootstrap_servers=broker)
    sessionmaker = make_sessionmaker(engine)
    consumer = BatchConsumer(
        consumer=make_consumer(settings, group, [source], "test"),
        group_id=group,
        sessionmaker=sessionmaker,
        inbox=case_inbox,
        outbox=outbox,
        router=router,
    )
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(60):
            while len(seen_in_handler) < 2:  # noqa: ASYNC110 - polling the handler's effect is the point
                await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task

    assert seen_in_handler["ACC-T1"] == TRACE_ID
    fresh = seen_in_handler["ACC-T2"]
    assert fresh
    assert fresh != TRACE_ID
    assert len(fresh) == 32

    async with sessionmaker() as s:
        rows = (await s.execute(select(case_outbox).where(case_outbox.c.topic == target))).all()
    by_key = {r.key: r.headers for r in rows}
    assert _trace_id(by_key["ACC-T1"]["traceparent"]) == TRACE_ID
    assert _trace_id(by_key["ACC-T2"]["traceparent"]) == fresh

    # The relay puts the headers on the Kafka message, where the next service's consumer reads them.
    kafka_producer = make_producer(settings, client_id="test")
    await kafka_producer.start()
    try:
        relay = OutboxRelay(case_outbox, sessionmaker, kafka_producer)
        async with asyncio.timeout(30):
            while await relay.relay_once():
                pass
    finally:
        await kafka_producer.stop()
    reader = AIOKafkaConsumer(target, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None)
    await reader.start()
    try:
        got: dict[str, str] = {}
        async with asyncio.timeout(30):
            while len(got) < 2:
                for msgs in (await reader.getmany(timeout_ms=500)).values():
                    for msg in msgs:
                        got[(msg.key or b"").decode()] = decode_headers(msg.headers)["traceparent"]
    finally:
        await reader.stop()
    assert _trace_id(got["ACC-T1"]) == TRACE_ID
    assert _trace_id(got["ACC-T2"]) == fresh
    async with sessionmaker() as s, s.begin():
        await s.execute(delete(case_outbox).where(case_outbox.c.topic == target))


async def test_http_requests_continue_or_start_a_trace() -> None:
    app = FastAPI()

    async def ready() -> dict[str, bool]:
        return {"database": True}

    install_operational_routes(app, ready)

    @app.get("/v1/echo")
    async def echo() -> dict[str, Any]:
        return {"headers": trace_headers(), "log_trace_id": trace_id_var.get()}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        continued = (await client.get("/v1/echo", headers={"traceparent": TRACEPARENT})).json()
        started = (await client.get("/v1/echo")).json()
        assert (await client.get("/healthz")).status_code == 200
    assert _trace_id(continued["headers"]["traceparent"]) == TRACE_ID
    assert continued["log_trace_id"] == TRACE_ID
    assert _trace_id(started["headers"]["traceparent"]) == started["log_trace_id"] != TRACE_ID


def test_tracing_is_off_unless_configured() -> None:
    assert configure_tracing("test", environ={}) is False
    assert tracing_enabled() is False
    with traced("work", {"traceparent": TRACEPARENT}, kind=SpanKind.INTERNAL) as tid:
        assert tid == TRACE_ID
    assert trace_id_var.get() is None


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_spans_are_exported_over_otlp_when_configured() -> None:
    """A process with OTEL_EXPORTER_OTLP_ENDPOINT exports its spans, as children of the incoming trace,
    to a local OTLP/HTTP collector stand-in."""
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = textwrap.dedent(
        f"""
        from opentelemetry.trace import SpanKind
        from arrears_shared.tracing import configure_tracing, shutdown_tracing, traced
        assert configure_tracing("case_manager")
        with traced("process ar.accounts.v1", {{"traceparent": "{TRACEPARENT}"}}, kind=SpanKind.CONSUMER) as tid:
            assert tid == "{TRACE_ID}", tid
        shutdown_tracing()
        """
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    paths = [p for p, _ in _Collector.received]
    assert "/v1/traces" in paths
    body = b"".join(b for p, b in _Collector.received if p == "/v1/traces")
    assert b"arrears-case_manager" in body  # the service name
    assert bytes.fromhex(TRACE_ID) in body  # the span belongs to the incoming trace
    assert b"process ar.accounts.v1" in body
