"""Logs are JSON and never carry an email address or a phone number."""

from __future__ import annotations

import io
import logging

import orjson

from arrears_shared.logs import JsonFormatter, event_id_var, redact


def test_redact_hides_addresses_and_numbers_but_not_ids_dates_or_ports() -> None:
    text = "sent to jane.doe+x@example.co.uk and +49 151 1234 5678 at 2026-11-01 via 127.0.0.1:8004 for INV-2026-001"
    out = redact(text)
    assert "jane" not in out and "1234 5678" not in out
    assert "[email]" in out and "[phone]" in out
    assert "2026-11-01" in out and "127.0.0.1:8004" in out and "INV-2026-001" in out


def test_json_lines_with_context_and_redaction() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("arrears.test.logs")
    logger.handlers = [handler]
    logger.propagate = False
    token = event_id_var.set("ev-1")
    try:
        logger.warning("failed for %s", "x@y.example", extra={"case_id": "c-1", "detail": "call +4915112345678"})
        try:
            raise ValueError("bad address a@b.example")
        except ValueError:
            logger.exception("boom")
    finally:
        event_id_var.reset(token)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["msg"] == "failed for [email]"
    assert lines[0]["event_id"] == "ev-1" and lines[0]["case_id"] == "c-1" and lines[0]["service"] == "test"
    assert lines[0]["detail"] == "call [phone]"
    assert "a@b.example" not in lines[1]["exc"]
