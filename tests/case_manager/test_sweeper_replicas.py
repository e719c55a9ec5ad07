"""Two sweeper processes (replicas) fire 10,000 due timers: each exactly once."""

from __future__ import annotations

import asyncio

from bench.case_manager_timers import counts, run_replicas, seed_due_accounts
from tests.conftest import Databases, migrated_database


def test_two_sweeper_processes_fire_each_timer_exactly_once(databases: Databases, broker: str) -> None:
    url = migrated_database(databases, broker, "cm_sweep")
    asyncio.run(seed_due_accounts(url, 10_000, "R"))
    fired, _rss, _seconds = run_replicas(url, 2)
    assert sum(fired) == 10_000  # every timer fired, none twice
    c = asyncio.run(counts(url, "R"))
    assert c["stage_changes"] == 10_000  # one case, entering one level, per account
    assert c["notifications"] == c["distinct_notifications"] == 10_000
    assert c["still_due"] == 0
