"""The interface every channel implements, and how failures are classified."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime


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


class AmbiguousSendError(Exception):
    """The provider may or may not have taken the message (a timeout or a dropped connection after
    the message was handed over). Never retried blindly: recovery asks the provider, or gives up."""


class PermanentSendError(Exception):
    """Retrying cannot help (4xx, SMTP 5xx, invalid recipient). ``hard_bounce`` suppresses the address."""

    def __init__(self, message: str, *, hard_bounce: bool = False) -> None:
        super().__init__(message)
        self.hard_bounce = hard_bounce


Handover = Callable[[], Awaitable[bool]]
"""Called by a channel at the last moment before the provider can take the message (before the
HTTP request, before SMTP DATA). It commits the notification as ``sending``; False means the
notification moved on meanwhile and the channel must not hand it over."""


class HandoverRefused(Exception):
    """The notification was no longer ours to send; nothing was handed to the provider."""


class OutcomeUnknown(Exception):
    """Whether the provider accepted a message cannot be found out."""


class Channel(ABC):
    name: str
    # How many sends the dispatcher runs at once on this channel: every one of them is in the
    # "sending" state, so this bounds what a crash can leave with an unknown outcome.
    concurrency: int = 10

    @abstractmethod
    async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
        """Hand ``message`` to the provider; raise Transient/Permanent/AmbiguousSendError on failure.

        Everything that cannot make the provider take the message (connecting, authenticating,
        SMTP MAIL and RCPT) happens before ``handover`` is awaited; see :data:`Handover`.
        """

    async def lookup(self, message: Message, since: datetime) -> SendResult | None:
        """Ask the provider whether it already accepted ``message`` (sent at or after ``since``).

        Returns the provider's result if it did, None if it certainly did not; raises
        :class:`OutcomeUnknown` when the provider cannot tell (SMTP has no such query).
        """
        raise OutcomeUnknown(f"{self.name} provider cannot be asked what it accepted")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
