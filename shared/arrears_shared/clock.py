"""An injectable clock, so tests can move time and nothing reads the wall clock directly.

Production uses :class:`SystemClock`. Development and tests may set ``ARREARS_CLOCK_FILE`` to a
file holding an offset in seconds; every service process that reads it then runs that far
ahead, and a test can move time for all of them at once by rewriting the file.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to (unit tests)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._at += delta


class FileOffsetClock:
    """System time plus an offset in seconds read from a file (re-read at most every 0.2 s)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0.0
        self._read_at = 0.0

    def _refresh(self) -> None:
        mono = time.monotonic()
        if mono - self._read_at < 0.2:
            return
        self._read_at = mono
        try:
            self._offset = float(self._path.read_text().strip() or 0)
        except (OSError, ValueError):
            self._offset = 0.0

    def now(self) -> datetime:
        self._refresh()
        return datetime.now(UTC) + timedelta(seconds=self._offset)


def make_clock(clock_file: str | None) -> Clock:
    return FileOffsetClock(Path(clock_file)) if clock_file else SystemClock()
