"""A circuit breaker per provider: after ``threshold`` transient failures in a row the provider is
left alone for ``cool_down`` seconds (sends fail fast and are retried later), then one trial send
decides whether it closes again."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from arrears_notifier.channels.base import (
    AmbiguousSendError,
    Channel,
    Handover,
    Message,
    PermanentSendError,
    SendResult,
    TransientSendError,
)


class CircuitOpen(TransientSendError):
    """The provider failed repeatedly; this send was not attempted."""


class CircuitBreaker:
    def __init__(
        self, threshold: int = 5, cool_down: float = 30.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cool_down = cool_down
        self.monotonic = monotonic
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.monotonic() - self.opened_at >= self.cool_down:
            return "half-open"
        return "open"

    def before(self) -> None:
        state = self.state
        if state == "open" or (state == "half-open" and self._trial_in_flight):
            raise CircuitOpen("provider circuit open after repeated failures; not attempted")
        if state == "half-open":
            self._trial_in_flight = True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def failure(self) -> None:
        self._trial_in_flight = False
        self.failures += 1
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self.monotonic()


class BreakingChannel(Channel):
    """Wraps a channel with a circuit breaker. Only transient failures count against the provider."""

    def __init__(self, inner: Channel, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.name = inner.name
        self.concurrency = inner.concurrency

    async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
        self.breaker.before()
        try:
            result = await self.inner.send(message, handover)
        except (TransientSendError, AmbiguousSendError):
            self.breaker.failure()
            raise
        except PermanentSendError:
            self.breaker.success()  # a permanent error is the message's fault, not the provider's
            raise
        self.breaker.success()
        return result

    async def lookup(self, message: Message, since: datetime) -> SendResult | None:
        return await self.inner.lookup(message, since)

    async def close(self) -> None:
        await self.inner.close()
