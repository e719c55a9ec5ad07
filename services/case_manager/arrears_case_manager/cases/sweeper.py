"""The timer sweeper: fires due case timers. Safe in any number of replicas (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arrears_case_manager.cases.service import CaseService
from arrears_shared.metrics import TIMERS_DUE, TIMERS_FIRED, TIMERS_OLDEST_DUE

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        service: CaseService,
        sessionmaker: async_sessionmaker[AsyncSession],
        interval: float,
        batch: int,
        on_commit: object = None,
    ) -> None:
        self.service = service
        self.sessionmaker = sessionmaker
        self.interval = interval
        self.batch = batch
        self._stop = asyncio.Event()
        self.on_commit = on_commit
        self.last_claimed = 0  # due timers the last sweep claimed
        self._summary_at: float | None = None  # when the due-timer gauges were last set (monotonic)

    def stop(self) -> None:
        self._stop.set()

    async def sweep_once(self) -> int:
        """One sweep; how many due timers it fired. ``last_claimed`` keeps how many it claimed: a full
        claim means more may be due, even when busy accounts were left for later and fewer fired."""
        async with self.sessionmaker() as session, session.begin():
            claimed, fired = await self.service.sweep_batch(session, self.batch)
        self.last_claimed = claimed
        TIMERS_FIRED.inc(fired)
        if fired and callable(self.on_commit):
            self.on_commit()
        # The gauges count every due timer: while a backlog is worked off in full batches, count it at most
        # once per interval rather than after every batch (it would scan the whole backlog each time).
        clock = time.monotonic()
        if claimed < self.batch or self._summary_at is None or clock - self._summary_at >= self.interval:
            async with self.sessionmaker() as session, session.begin():
                due, late = await self.service.due_summary(session)
            TIMERS_DUE.set(due)
            TIMERS_OLDEST_DUE.set(late)
            self._summary_at = clock
        return fired

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                fired = await self.sweep_once()
                claimed = self.last_claimed
            except Exception:
                log.exception("timer sweep failed; retrying")
                fired = claimed = 0
            if claimed >= self.batch and fired:
                continue  # more may be due (some accounts may have been busy and skipped): keep going
            # Nothing more due, or a full claim of accounts all busy right now: wait (briefly for the latter).
            pause = min(self.interval, 0.2) if claimed >= self.batch else self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=pause)
