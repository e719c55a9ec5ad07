"""The interface every channel implements, and how failures are classified."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    notification_id: str
    to: str
    subject: str | None
    text: str
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str | None


class TransientSendError(Exception):
    """Worth retrying later (timeouts, 5xx, SMTP 4xx, 429)."""


class PermanentSendError(Exception):
    """Retrying cannot help (4xx, SMTP 5xx, invalid recipient). ``hard_bounce`` suppresses the address."""

    def __init__(self, message: str, *, hard_bounce: bool = False) -> None:
        super().__init__(message)
        self.hard_bounce = hard_bounce


class Channel(ABC):
    name: str

    @abstractmethod
    async def send(self, message: Message) -> SendResult:
        """Hand ``message`` to the provider; raise Transient/PermanentSendError on failure."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
