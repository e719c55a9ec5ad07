"""Tracing that follows one event across the services through Kafka headers (W3C ``traceparent``).

Off unless configured: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
set, :func:`configure_tracing` installs the OpenTelemetry SDK and exports spans over OTLP/HTTP; the
standard ``OTEL_*`` variables (service name, sampler, headers) apply. Off, no span is recorded, but the
trace context still travels: an HTTP request or a consumed message without one starts a fresh trace id,
the outbox writes it into each event's Kafka headers, and the consumer downstream continues it, so the
``trace_id`` in every JSON log line follows the event through all four services either way.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from arrears_shared.logs import trace_id_var

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = trace.get_tracer("arrears")
_enabled = False


def tracing_enabled() -> bool:
    return _enabled


def configure_tracing(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK and the OTLP exporter when an endpoint is configured; True when it did."""
    global _enabled
    env = os.environ if environ is None else environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or env.get("OTEL_SDK_DISABLED", "").lower() == "true" or _enabled:
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = env.get("OTEL_SERVICE_NAME") or f"arrears-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def shutdown_tracing() -> None:
    """Flush spans still buffered (called when the process stops)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if _enabled and callable(shutdown):
        shutdown()


def trace_headers() -> dict[str, str]:
    """The current trace context as message headers (``traceparent``; empty outside any trace)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def _fresh_context() -> otel_context.Context:
    span_context = SpanContext(
        trace_id=int.from_bytes(secrets.token_bytes(16), "big") or 1,
        span_id=int.from_bytes(secrets.token_bytes(8), "big") or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


@contextmanager
def traced(
    name: str, carrier: Mapping[str, str], *, kind: SpanKind, attributes: Mapping[str, str | int] | None = None
) -> Iterator[str]:
    """Continue the trace ``carrier`` names (or start one) around a unit of work; yields the trace id.

    With tracing on, a span ``name`` is recorded as a child of the incoming context. Off, the incoming
    context (or a fresh one) is only made current, so what the work writes to the outbox carries it.
    """
    parent = _PROPAGATOR.extract(dict(carrier))
    if not trace.get_current_span(parent).get_span_context().is_valid:
        parent = _fresh_context()
    token = otel_context.attach(parent)
    try:
        if _enabled:
            with _TRACER.start_as_current_span(name, kind=kind, attributes=dict(attributes or {})) as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                log_token = trace_id_var.set(trace_id)
                try:
                    yield trace_id
                finally:
                    trace_id_var.reset(log_token)
        else:
            trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
            log_token = trace_id_var.set(trace_id)
            try:
                yield trace_id
            finally:
                trace_id_var.reset(log_token)
    finally:
        otel_context.detach(token)
