"""Recording, deciding, sending and reporting notifications.

A request is recorded (unique notification_id) before any provider is called. The dispatcher
then claims due rows with FOR UPDATE SKIP LOCKED, applies the contact rules, marks each
message ``sending`` and commits *before* calling the provider, and records the outcome in its
own small transaction right after the call. A process that dies between the provider's
acceptance and that record leaves the row in ``sending``; it is never sent again (at most once):
after ``stale_after`` it is reported ``failed`` with the reason "outcome unknown". The window is
the duration of one provider call plus one commit (milliseconds against a local relay).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arrears_notifier.channels.base import Channel, Message, PermanentSendError, TransientSendError
from arrears_notifier.deliveries.repository import DeliveryRepository
from arrears_notifier.deliveries.rules import next_window_start
from arrears_notifier.templates.render import Renderer
from arrears_shared.clock import Clock
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.events.v1 import DeliveryUpdated, NotificationRequested
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.metrics import NOTIFICATIONS
from arrears_shared.topics import DELIVERIES

log = logging.getLogger(__name__)
SOURCE = "arrears/notifier"
# A send that has not recorded its outcome after this long belongs to a process that died
# (the providers' own timeouts are far shorter).
STALE_SENDING = timedelta(minutes=2)


@dataclass(frozen=True)
class ContactRules:
    window_start_hour: int = 8
    window_end_hour: int = 21
    cap_per_7_days: int = 3
    max_attempts: int = 6


def address_hash(channel: str, address: str) -> str:
    normalized = address.strip().lower() if channel == "email" else address.strip()
    return hashlib.sha256(f"{channel}:{normalized}".encode()).hexdigest()


class LinkSigner:
    """Signed unsubscribe tokens: base64(channel:address_hash) + HMAC, so a link cannot be forged."""

    def __init__(self, secret: str) -> None:
        self.key = secret.encode()

    def sign(self, channel: str, hashed: str) -> str:
        body = base64.urlsafe_b64encode(f"{channel}:{hashed}".encode()).decode().rstrip("=")
        mac = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}.{mac}"

    def verify(self, token: str) -> tuple[str, str] | None:
        body, _, mac = token.partition(".")
        good = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, good):
            return None
        channel, _, hashed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().partition(":")
        return channel, hashed


class DeliveryService:
    def __init__(
        self,
        *,
        outbox: Outbox,
        clock: Clock,
        renderer: Renderer,
        channels: Mapping[str, Channel],
        rules: ContactRules,
        signer: LinkSigner,
        public_base_url: str,
        repository: DeliveryRepository | None = None,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.renderer = renderer
        self.channels = channels
        self.rules = rules
        self.signer = signer
        self.public_base_url = public_base_url.rstrip("/")
        self.repo = repository or DeliveryRepository()

    # ------------------------------------------------------------------ intake

    async def on_requested(self, session: AsyncSession, _event: CloudEvent, req: NotificationRequested) -> None:
        now = self.clock.now()
        due = max(now, req.not_before) if req.not_before else now
        await self.repo.record(
            session,
            {
                "notification_id": req.notification_id,
                "case_id": req.case_id,
                "account_id": req.account_id,
                "channel": req.channel,
                "template": req.template,
                "locale": req.locale,
                "recipient": req.recipient.model_dump(mode="json", exclude_none=True),
                "variables": req.variables,
                "expires_at": req.expires_at,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": now,
                "updated_at": now,
            },
        )

    # ------------------------------------------------------------------ dispatch

    async def claim(self, session: AsyncSession, limit: int) -> list[Row[Any]]:
        """Claim due notifications, apply the contact rules, and return the ones to send now (marked sending)."""
        now = self.clock.now()
        to_send = []
        for row in await self.repo.claim_due(session, now, limit):
            if await self._allowed(session, row, now):
                await self.repo.set(session, row.notification_id, now, status="sending", attempts=row.attempts + 1)
                to_send.append(row)
        return to_send

    async def _allowed(self, session: AsyncSession, row: Row[Any], now: datetime) -> bool:
        address = row.recipient.get("email" if row.channel == "email" else "phone")
        if row.expires_at is not None and row.expires_at <= now:
            await self._finish(session, row, now, "suppressed", "expired before it could be delivered")
            return False
        if not address or await self.repo.is_suppressed(session, row.channel, address_hash(row.channel, address)):
            await self._finish(session, row, now, "suppressed", "recipient opted out or bounced")
            return False
        opens = next_window_start(
            now, row.recipient["timezone"], self.rules.window_start_hour, self.rules.window_end_hour
        )
        if opens is not None:
            await self._defer(session, row, now, opens, "outside contact hours in the recipient's time zone")
            return False
        sent = await self.repo.sent_in_window(session, row.account_id, row.channel, now)
        if len(sent) >= self.rules.cap_per_7_days:
            until = sent[len(sent) - self.rules.cap_per_7_days] + timedelta(days=7)
            await self._defer(session, row, now, until, f"at most {self.rules.cap_per_7_days} per 7 days")
            return False
        return True

    async def _defer(self, session: AsyncSession, row: Row[Any], now: datetime, until: datetime, reason: str) -> None:
        if row.expires_at is not None and until >= row.expires_at:
            await self._finish(session, row, now, "suppressed", f"would expire before it may be sent ({reason})")
            return
        await self.repo.set(session, row.notification_id, now, next_attempt_at=until, reason=reason)
        if row.reason != reason:  # report a deferral once, not on every sweep
            await self._report(session, row, now, "deferred", reason)

    async def deliver(self, row: Row[Any], sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Send one claimed notification and record the outcome at once."""
        status, reason, provider_id, retry_at, hard_bounce = "sent", None, None, None, False
        try:
            message = self._message(row)
        except Exception as exc:  # a template that cannot render is the request's fault, not the provider's
            message = None
            status, reason = "failed", f"template could not be rendered: {type(exc).__name__}"
        if message is not None:
            try:
                result = await self.channels[row.channel].send(message)
                provider_id = result.provider_message_id
            except PermanentSendError as exc:
                status, reason, hard_bounce = "failed", str(exc), exc.hard_bounce
            except TransientSendError as exc:
                reason = str(exc)
                if row.attempts + 1 >= self.rules.max_attempts:
                    status = "failed"
                else:
                    status = "pending"
                    backoff = min(2 ** (row.attempts + 1) * 15, 3600)
                    retry_at = self.clock.now() + timedelta(seconds=backoff * random.uniform(0.5, 1.5))
            except Exception as exc:
                # Unknown whether the provider took it: never resend (at most once), report it.
                log.exception("channel failed unexpectedly", extra={"notification_id": row.notification_id})
                status, reason = "failed", f"outcome unknown: {type(exc).__name__}; not resent"
        now = self.clock.now()
        async with sessionmaker() as session, session.begin():
            if status == "sent":
                await self.repo.set(
                    session,
                    row.notification_id,
                    now,
                    status="sent",
                    sent_at=now,
                    provider_message_id=provider_id,
                    reason=None,
                )
                await self._report(session, row, now, "sent", None, provider_id)
            elif status == "pending":
                await self.repo.set(
                    session, row.notification_id, now, status="pending", next_attempt_at=retry_at, reason=reason
                )
            else:
                if hard_bounce:
                    address = row.recipient.get("email" if row.channel == "email" else "phone", "")
                    await self.repo.suppress(
                        session, row.channel, address_hash(row.channel, address), "hard bounce", now
                    )
                await self._finish(session, row, now, "failed", reason)

    async def recover(self, session: AsyncSession, stale_after: timedelta, limit: int = 500) -> int:
        """Rows left in ``sending`` by a process that died: never resent, reported as failed."""
        now = self.clock.now()
        rows = await self.repo.stale_sending(session, now - stale_after, limit)
        for row in rows:
            await self._finish(
                session, row, now, "failed", "outcome unknown: the sender stopped during the provider call; not resent"
            )
        return len(rows)

    def _message(self, row: Row[Any]) -> Message:
        address = row.recipient["email"] if row.channel == "email" else row.recipient["phone"]
        token = self.signer.sign(row.channel, address_hash(row.channel, address))
        unsubscribe = f"{self.public_base_url}/v1/unsubscribe?token={token}"
        rendered = self.renderer.render(
            row.template, row.locale, row.channel, {**row.variables, "unsubscribe_link": unsubscribe}
        )
        headers: tuple[tuple[str, str], ...] = ()
        if row.channel == "email":
            headers = (
                ("List-Unsubscribe", f"<{unsubscribe}>"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            )
        return Message(row.notification_id, address, rendered.subject, rendered.text, rendered.html, headers)

    async def _finish(
        self, session: AsyncSession, row: Row[Any], now: datetime, status: str, reason: str | None
    ) -> None:
        await self.repo.set(session, row.notification_id, now, status=status, reason=reason, next_attempt_at=None)
        await self._report(session, row, now, status, reason)

    async def _report(
        self,
        session: AsyncSession,
        row: Row[Any],
        now: datetime,
        status: str,
        reason: str | None,
        provider_id: str | None = None,
    ) -> None:
        # Every outcome passes here once (a deferral only when its reason changes). Counted when recorded;
        # a transaction that then rolls back is re-run and counted again, so the count can only run high.
        NOTIFICATIONS.labels(row.channel, status).inc()
        update = DeliveryUpdated(
            notification_id=row.notification_id,
            case_id=row.case_id,
            account_id=row.account_id,
            channel=row.channel,
            status=status,
            reason=reason,
            provider_message_id=provider_id,
            at=now,
        )
        await self.outbox.add(
            session,
            DELIVERIES,
            new_event(
                type="collections.delivery.updated", source=SOURCE, subject=row.account_id, data=update, time=now
            ),
        )


class Dispatcher:
    """The loop that sends due notifications with bounded concurrency. Safe in several replicas."""

    def __init__(
        self,
        service: DeliveryService,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        concurrency: int,
        poll_seconds: float,
        on_commit: Any = None,
    ) -> None:
        self.service = service
        self.sessionmaker = sessionmaker
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.on_commit = on_commit
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def dispatch_once(self) -> int:
        async with self.sessionmaker() as session, session.begin():
            rows = await self.service.claim(session, self.concurrency * 4)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(row: Row[Any]) -> None:
            async with sem:
                await self.service.deliver(row, self.sessionmaker)

        await asyncio.gather(*(one(r) for r in rows))
        if callable(self.on_commit):
            self.on_commit()
        return len(rows)

    async def run(self) -> None:
        recovered_at = 0.0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                if loop.time() - recovered_at > 30:
                    recovered_at = loop.time()
                    async with self.sessionmaker() as session, session.begin():
                        await self.service.recover(session, STALE_SENDING)
                n = await self.dispatch_once()
            except Exception:
                log.exception("dispatch failed; retrying")
                n = 0
            if n:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
