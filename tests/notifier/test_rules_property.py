"""Property tests of the contact window across time zones and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from arrears_notifier.deliveries.rules import next_window_start

# Zones with DST in either hemisphere, half-hour and 45-minute offsets, a 30-minute DST shift
# (Lord Howe), changes at midnight (Santiago, Havana), a skipped calendar day (Apia 2011) and none at all.
ZONES = [
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "America/St_Johns",
    "America/Santiago",
    "America/Havana",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Asia/Kolkata",
    "Asia/Tehran",
    "Africa/Casablanca",
    "Asia/Tokyo",
    "Etc/UTC",
]

instants = st.datetimes(min_value=datetime(2005, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)
windows = st.integers(min_value=0, max_value=22).flatmap(
    lambda start: st.tuples(st.just(start), st.integers(min_value=start + 1, max_value=24))
)


def inside(at: datetime, zone: str, start: int, end: int) -> bool:
    return start <= at.astimezone(ZoneInfo(zone)).hour < end


@settings(max_examples=400, deadline=None)
@given(now=instants, zone=st.sampled_from(ZONES), window=windows)
def test_next_window_is_the_first_permitted_instant(now: datetime, zone: str, window: tuple[int, int]) -> None:
    start, end = window
    opens = next_window_start(now, zone, start, end)
    if opens is None:
        assert inside(now, zone, start, end)
        return
    assert not inside(now, zone, start, end)
    assert opens > now
    assert opens.utcoffset() == timedelta(0)
    assert inside(opens, zone, start, end), "a deferred message must land inside the window"
    assert opens - now <= timedelta(hours=49)
    # Nothing earlier was permitted: every quarter hour in between is outside the window.
    probe = now
    while probe < opens - timedelta(minutes=15):
        probe += timedelta(minutes=15)
        if probe < opens:
            assert not inside(probe, zone, start, end), f"{probe} was already permitted"


@settings(max_examples=200, deadline=None)
@given(now=instants, zone=st.sampled_from(ZONES))
def test_default_window_opens_at_eight_local(now: datetime, zone: str) -> None:
    opens = next_window_start(now, zone, 8, 21)
    if opens is not None:
        local = opens.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute) == (8, 0)


def test_a_window_inside_the_dst_gap_moves_to_the_next_day() -> None:
    # 02:00-03:00 does not exist in Berlin on 2005-03-27 (found by the property test above).
    opens = next_window_start(datetime(2005, 3, 26, 2, 0, tzinfo=UTC), "Europe/Berlin", 2, 3)
    assert opens == datetime(2005, 3, 28, 0, 0, tzinfo=UTC)  # 02:00 CEST on the 28th


def test_spring_forward_and_fall_back_in_berlin() -> None:
    # 02:30 on 2026-03-29 does not exist in Berlin; the window still opens at 08:00 CEST (06:00 UTC).
    assert next_window_start(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "Europe/Berlin", 8, 21) == datetime(
        2026, 3, 29, 6, 0, tzinfo=UTC
    )
    # On 2026-10-25 the clock falls back: 08:00 CET is 07:00 UTC.
    assert next_window_start(datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "Europe/Berlin", 8, 21) == datetime(
        2026, 10, 25, 7, 0, tzinfo=UTC
    )
    # 20:59 local is still inside; 21:00 local is outside until 08:00 the next day.
    assert next_window_start(datetime(2026, 7, 1, 18, 59, tzinfo=UTC), "Europe/Berlin", 8, 21) is None
    assert next_window_start(datetime(2026, 7, 1, 19, 0, tzinfo=UTC), "Europe/Berlin", 8, 21) == datetime(
        2026, 7, 2, 6, 0, tzinfo=UTC
    )
