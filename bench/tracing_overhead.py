"""What tracing costs per consumed message: ``traced()`` around a handler plus ``trace_headers()`` for the
event it emits, with tracing off (the default: context only, no spans) and on (SDK spans through a batch
processor, exported to memory so the network is not measured).

    python -m bench.tracing_overhead
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from arrears_shared import tracing

N = 20_000
CARRIER = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
ATTRS = {"messaging.system": "kafka", "messaging.destination.name": "ar.accounts.v1", "messaging.kafka.offset": 1}


def _per_message_us() -> float:
    start = time.perf_counter()
    for _ in range(N):
        with tracing.traced("process ar.accounts.v1", CARRIER, kind=SpanKind.CONSUMER, attributes=ATTRS):
            tracing.trace_headers()
    return (time.perf_counter() - start) / N * 1e6


def main() -> None:
    _per_message_us()  # warm up
    off = min(_per_message_us() for _ in range(3))
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=N * 4))
    trace.set_tracer_provider(provider)
    tracing._enabled = True  # what configure_tracing does, without an OTLP endpoint
    on = min(_per_message_us() for _ in range(3))
    provider.shutdown()
    print(f"tracing off: {off:.1f} µs per message (context extract, attach, traceparent inject)")
    print(f"tracing on:  {on:.1f} µs per message (plus one SDK span, batched; export not included)")
    print(f"spans exported: {len(exporter.get_finished_spans())}")


if __name__ == "__main__":
    main()
