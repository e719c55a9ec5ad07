"""The JSON log lines operators ship: trace and event ids, no terminal colour codes, no personal data."""

from __future__ import annotations

import logging

import orjson

from arrears_shared.logs import JsonFormatter, event_id_var, trace_id_var


def test_log_line_carries_ids_and_no_colour_codes_or_addresses() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started for %s", ("ann@example.com",), None)
    record.color_message = "\x1b[1mStarted\x1b[0m"
    trace_token = trace_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    event_token = event_id_var.set("evt-1")
    try:
        line = JsonFormatter("case_manager").format(record)
    finally:
        trace_id_var.reset(trace_token)
        event_id_var.reset(event_token)
    entry = orjson.loads(line)
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["event_id"] == "evt-1"
    assert entry["service"] == "case_manager"
    assert "color_message" not in entry
    assert "\x1b" not in line
    assert "ann@example.com" not in line
