"""Error types shared by consumers and HTTP endpoints."""

from __future__ import annotations

from pydantic import ValidationError


class PermanentError(Exception):
    """Processing this input can never succeed: do not retry, dead-letter it (or answer 4xx)."""


class ConflictError(PermanentError):
    """The input contradicts what is already recorded (HTTP 409)."""


class NotFoundError(Exception):
    """A resource that does not exist (HTTP 404)."""


def describe_validation_error(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[dict[str, str]]:
    """Field paths and messages of a pydantic error, never the offending values (they may be personal data)."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in (*prefix, *err["loc"]))
        out.append({"field": loc or "(root)", "message": err["msg"]})
    return out


def summarize_validation_error(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> str:
    return "; ".join(f"{e['field']}: {e['message']}" for e in describe_validation_error(exc, prefix))
