"""The daily re-age: find, in one set-based statement, the accounts whose bucket, level-relevant
age or risk tier changed since their state was published, and publish only those again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arrears_scoring.ledger.service import LedgerService

log = logging.getLogger(__name__)

DEFAULT_LEVEL_OFFSETS = [-3, 0, 1, 7, 14, 30, 60]


class Reager:
    def __init__(
        self,
        ledger: LedgerService,
        sessionmaker: async_sessionmaker[AsyncSession],
        level_offsets: list[int] | None = None,
        batch: int = 500,
    ) -> None:
        self.ledger = ledger
        self.sessionmaker = sessionmaker
        self.level_offsets = level_offsets or DEFAULT_LEVEL_OFFSETS
        self.batch = batch
        self._stop = asyncio.Event()
        self._done_for: date | None = None

    async def changed(self, session: AsyncSession, today: date) -> list[str]:
        feature = self.ledger.model.feature("days_past_due")
        dpd = (feature.coef, feature.center, feature.cap) if feature else (0.0, 0.0, 0.0)
        cap = dpd[2] if dpd[2] != float("inf") else 1e9
        return await self.ledger.repository.accounts_to_reage(
            session, today, self.level_offsets, (dpd[0], dpd[1], cap), self.ledger.thresholds
        )

    async def run_once(self) -> int:
        """Re-age as of the clock's today; returns how many accounts were published again.
        Safe with several replicas: one holds the re-age lock, the others skip."""
        today = self.ledger.clock.now().date()
        async with self.sessionmaker() as session, session.begin():
            got = await session.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext('scoring:reage'))"))
            if not got:
                return 0
            ids = await self.changed(session, today)
        for start in range(0, len(ids), self.batch):
            async with self.sessionmaker() as session, session.begin():
                await self.ledger.publish_many(session, ids[start : start + self.batch])
        log.info("re-aged as of %s: %d accounts published", today, len(ids))
        return len(ids)

    async def run(self, every_seconds: float = 60.0) -> None:
        """Re-age once per day (the first check after midnight UTC), checking every minute."""
        while not self._stop.is_set():
            try:
                today = self.ledger.clock.now().date()
                if self._done_for != today:
                    await self.run_once()
                    self._done_for = today
            except Exception:
                log.exception("re-age failed; retrying later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every_seconds)

    def stop(self) -> None:
        self._stop.set()
