"""What the benchmarks measure of the processes they run: CPU seconds of a process tree (the ended
children a process waited for included, as PostgreSQL's backends are) and the embedded server's
postmaster."""

from __future__ import annotations

import contextlib
from typing import Any

import psutil  # type: ignore[import-untyped]


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
