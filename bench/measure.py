"""What the benchmarks measure of the processes they run: CPU seconds of a process tree (the ended
children a process waited for included, as PostgreSQL's backends are) and the embedded server's
postmaster; waiting for a consumer group to settle."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psutil  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient


def postmaster(pg: Any) -> psutil.Process | None:
    """The embedded PostgreSQL's postmaster (``pg.pgdata/postmaster.pid``); None without one."""
    if pg is None:
        return None
    try:
        with open(f"{pg.pgdata}/postmaster.pid") as pidfile:
            return psutil.Process(int(pidfile.read().split()[0]))
    except (OSError, ValueError, psutil.Error):
        return None


def tree_cpu(proc: psutil.Process | int | None) -> float:
    """CPU seconds (user + system) of ``proc``, of its children that ended and were waited for, and
    of its live descendants; 0 when it is gone."""
    if proc is None:
        return 0.0
    try:
        root = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        t = root.cpu_times()
        total = float(t.user + t.system + t.children_user + t.children_system)
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    except psutil.Error:
        return 0.0


async def wait_for_group(bootstrap: str, group_id: str, members: int, timeout: float = 60.0) -> bool:
    """Wait until consumer group ``group_id`` is stable with ``members`` members (every consumer joined), so that
    a benchmark measures applying, not the group's join and rebalances."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                groups = await admin.describe_consumer_groups([group_id])
                state, count = "", 0
                for response in groups:
                    for group in response.groups:
                        state, count = group[2], len(group[-1])
                if state == "Stable" and count == members:
                    return True
            except Exception:
                return False
            await asyncio.sleep(0.5)
        return False
    finally:
        await admin.close()
