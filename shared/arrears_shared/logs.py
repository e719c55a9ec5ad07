"""JSON logs, one object per line, that never carry an email address or a phone number.

Names cannot be recognised by pattern, so the rule for names is structural: code logs ids
(account, case, notification, event), never customer fields. The redaction filter below is
the safety net for addresses and numbers that slip into a message or an exception text.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# E.164 and international formats ("+49 151 1234 5678"); dates, ports and ids are not numbers to hide.
_PHONE = re.compile(r"\+\d[\d \-().]{5,20}\d")

trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)


def redact(text: str) -> str:
    """Replace email addresses and phone-like digit runs with placeholders."""
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


# Left out of the JSON too: uvicorn's "color_message" (the message again, with terminal colour codes).
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        trace_id = trace_id_var.get()
        if trace_id:
            entry["trace_id"] = trace_id
        event_id = event_id_var.get()
        if event_id:
            entry["event_id"] = event_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx and httpcore log request URLs at INFO, and provider URLs can carry phone numbers.
    for noisy in ("aiokafka", "kafka", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").handlers.clear()
