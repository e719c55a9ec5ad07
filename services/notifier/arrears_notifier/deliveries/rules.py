"""Contact rules as pure functions: the contact window in the recipient's own time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def next_window_start(now: datetime, timezone: str, start_hour: int, end_hour: int) -> datetime | None:
    """None if ``now`` is inside [start_hour, end_hour) local time; else the UTC instant the next window opens.

    Local wall times are resolved through the IANA zone, so a window opens at 08:00 local on the
    day after a daylight-saving change just as on any other day.
    """
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    if start_hour <= local.hour < end_hour:
        return None
    day = local.date() if local.hour < start_hour else local.date() + timedelta(days=1)
    for _ in range(7):
        # A wall time skipped by a DST jump does not exist: it maps forward through UTC. If the
        # whole window was skipped that day (a window inside the gap), the next day's opens.
        opens = datetime.combine(day, time(start_hour), tzinfo=zone).astimezone(UTC)
        if opens > now and start_hour <= opens.astimezone(zone).hour < end_hour:
            return opens
        day += timedelta(days=1)
    raise ValueError(f"no contact window from {start_hour}:00 to {end_hour}:00 in {timezone}")  # pragma: no cover
