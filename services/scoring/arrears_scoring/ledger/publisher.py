"""Drains scoring.dirty_accounts: publishes the next version of every account whose documents
changed, in bulk. Safe with several replicas (rows are taken FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arrears_scoring.ledger.service import LedgerService

log = logging.getLogger(__name__)


class AccountPublisher:
    def __init__(
        self,
        ledger: LedgerService,
        sessionmaker: async_sessionmaker[AsyncSession],
        batch: int = 500,
        poll_seconds: float = 0.5,
        on_published: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.sessionmaker = sessionmaker
        self.batch = batch
        self.poll_seconds = poll_seconds
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.on_published = on_published

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        total = 0
        while True:
            async with self.sessionmaker() as session, session.begin():
                n = await self.ledger.publish_dirty(session, self.batch)
            total += n
            if n < self.batch:
                return total

    async def run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                n = await self.drain()
                if n and self.on_published is not None:
                    self.on_published()  # the outbox relay sends the new versions now
            except Exception:
                log.exception("publishing changed accounts failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
        with contextlib.suppress(Exception):
            await self.drain()  # what the last batch of events changed

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
