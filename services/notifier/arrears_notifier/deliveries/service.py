"""Recording, deciding, sending and reporting notifications.

A request is recorded (unique notification_id) before any provider is called. The dispatcher
claims due rows with FOR UPDATE SKIP LOCKED, applies the contact rules and marks them
``claimed``. Each message is then marked ``sending`` in a commit at the last moment before the
provider can take it (before the HTTP request; after SMTP RCPT, before DATA), and the outcome is
recorded in a commit right after. Sends that reach those points together share the statement and
the commit (group commit, :class:`_Waves`); none is handed over before its mark is committed.
States: pending → claimed → sending → sent → delivered | failed, with deferrals (pending with a
reason and a later time) and suppressions reported as they happen.

A process that dies leaves rows in ``claimed`` (never handed over: due again after
``stale_after``) or ``sending`` (handed over, outcome unrecorded). For those, recovery asks the
provider: the SMS API lists the messages it took, and an email is searched for by its Message-ID
(one per notification) when a Mailpit-compatible search API is configured
(``ARREARS_SMTP_LOOKUP_URL``); found, it is recorded as sent, not found, it is sent once more:
exactly once. Without that API SMTP cannot be asked, so an email in that window is never resent
(at most once) and is reported failed "outcome unknown". That window is the DATA exchange plus
one commit, for at most ``channel.concurrency`` messages per process (the SMTP pool size, 4 by
default).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import orjson
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from arrears_notifier.channels.base import (
    AmbiguousSendError,
    Channel,
    HandoverRefused,
    Message,
    OutcomeUnknown,
    PermanentSendError,
    TransientSendError,
)
from arrears_notifier.deliveries.repository import Claimed, DeliveryRepository
from arrears_notifier.deliveries.rules import next_window_start
from arrears_notifier.templates.render import Renderer
from arrears_shared.clock import Clock
from arrears_shared.events.envelope import CloudEvent, event_json, new_event
from arrears_shared.events.v1 import CaseEvent, DeliveryUpdated, NotificationRequested
from arrears_shared.messaging.outbox import Outbox, shard_of
from arrears_shared.metrics import NOTIFICATIONS
from arrears_shared.topics import DELIVERIES
from arrears_shared.tracing import trace_headers

log = logging.getLogger(__name__)
SOURCE = "arrears/notifier"
DELIVERY_UPDATED = "collections.delivery.updated"
# A send that has not recorded its outcome after this long belongs to a process that died
# (the providers' own timeouts are far shorter).
STALE_SENDING = timedelta(minutes=2)
# A message whose provider could not be asked for this long is reported "outcome unknown" (never resent).
LOOKUP_GIVE_UP = timedelta(hours=24)

# Twilio's message statuses in the order they happen; a callback never moves a message back.
PROVIDER_STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
}
TERMINAL = frozenset({"delivered", "failed", "suppressed"})
# Error codes that mean the number cannot receive SMS at all: unknown destination, landline.
SMS_HARD_BOUNCE_CODES = frozenset({"30005", "30006"})
STOP_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "QUIT", "END", "REVOKE", "OPT OUT", "OPTOUT", "CANCEL", "UNSUBSCRIBE", "STOP ALL"}
)
START_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
OPT_OUT_REASON = "sms opt-out keyword"


_COUNTERS: dict[tuple[str, str], Any] = {}


def _counter(channel: str, status: str) -> Any:
    """The outcome counter's child for (channel, status), looked up once rather than per message."""
    child = _COUNTERS.get((channel, status))
    if child is None:
        child = _COUNTERS[(channel, status)] = NOTIFICATIONS.labels(channel, status)
    return child


@dataclass(frozen=True)
class StatusCallback:
    notification_id: str
    message_sid: str | None
    status: str
    error_code: str | None


@dataclass(frozen=True)
class ContactRules:
    window_start_hour: int = 8
    window_end_hour: int = 21
    cap_per_7_days: int = 3
    max_attempts: int = 6
    # Templates that belong after a case closes (the thank-you for a payment): not suppressed by it.
    after_close_templates: frozenset[str] = frozenset({"thank_you"})


@dataclass
class _BatchContext:
    suppressed: AbstractSet[tuple[str, str | None]]
    recent: dict[tuple[str, str], list[datetime]]


# A notification as the dispatcher claimed it, or as read from the table (recovery, callbacks).
NotificationRow: TypeAlias = Row[Any] | Claimed


async def _driver(session: AsyncSession) -> Any:
    """The driver's (asyncpg's) connection under ``session``'s."""
    connection = await session.connection()
    return (await connection.get_raw_connection()).driver_connection


def _address(row: NotificationRow) -> str:
    return str(row.recipient.get("email" if row.channel == "email" else "phone") or "")


def _hash(row: NotificationRow) -> str | None:
    address = _address(row)
    return address_hash(row.channel, address) if address else None


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
        try:
            channel, _, hashed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if channel not in ("email", "sms") or len(hashed) != 64:
            return None
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
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._waves: dict[async_sessionmaker[AsyncSession], _Waves] = {}

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

    async def claim(self, session: AsyncSession, limit: int) -> list[Claimed]:
        """Claim due notifications, apply the contact rules, and return the ones to send now (marked claimed:
        taken by this process, certainly not handed to a provider yet).

        The claim is one statement on the session's connection (its own transaction unless the session
        has one open) that also reads what the rules need (closed cases, suppressions, recent sends)
        as it was before the claim. The rows the rules hold back are then deferred or suppressed in
        the session (``attempts`` as it was): until that commits they are ``claimed``, never sent, and
        a process that dies meanwhile leaves them to recovery like any other claimed row.
        """
        now = self.clock.now()
        rows = await self.repo.claim_due(await _driver(session), now, limit)
        if not rows:
            return []
        suppressed = {(r.channel, r.address_hash) for r in rows if r.suppressed}
        # Where PostgreSQL hashed an address otherwise (lower() and btrim() differ from Python's
        # lower() and strip() beyond ASCII), the suppression list is asked again with Python's hash.
        again = {(r.channel, h) for r in rows if (h := _hash(r)) is not None and h != r.address_hash}
        if again:
            suppressed |= await self.repo.suppressed_among(session, again)
        context = _BatchContext(suppressed=suppressed, recent={})
        to_send = []
        for row in rows:
            context.recent.setdefault((row.account_id, row.channel), list(row.recent))
            if await self._allowed(session, row, now, context):
                to_send.append(row)
        return to_send

    async def _allowed(self, session: AsyncSession, row: Claimed, now: datetime, context: _BatchContext) -> bool:
        """Whether ``row`` (just claimed) may go now; if not, it is suppressed or deferred (pending again)."""
        restore = {"attempts": row.attempts}  # a claim that sends nothing is not an attempt
        address = _address(row)
        closed = row.closed  # read with the claim
        if closed is not None and row.template not in self.rules.after_close_templates:
            await self._finish(session, row, now, "suppressed", f"case {closed}", **restore)
            return False
        if row.expires_at is not None and row.expires_at <= now:
            await self._finish(session, row, now, "suppressed", "expired before it could be delivered", **restore)
            return False
        if not address or (row.channel, address_hash(row.channel, address)) in context.suppressed:
            await self._finish(session, row, now, "suppressed", "recipient opted out or bounced", **restore)
            return False
        opens = next_window_start(
            now, row.recipient["timezone"], self.rules.window_start_hour, self.rules.window_end_hour
        )
        if opens is not None:
            await self._defer(session, row, now, opens, "outside contact hours in the recipient's time zone")
            return False
        sent = context.recent.setdefault((row.account_id, row.channel), [])
        if len(sent) >= self.rules.cap_per_7_days:
            sent.sort()
            until = sent[len(sent) - self.rules.cap_per_7_days] + timedelta(days=7)
            await self._defer(session, row, now, until, f"at most {self.rules.cap_per_7_days} per 7 days")
            return False
        sent.append(now)  # counts against the cap for the rest of this batch
        return True

    async def _defer(self, session: AsyncSession, row: Claimed, now: datetime, until: datetime, reason: str) -> None:
        if row.expires_at is not None and until >= row.expires_at:
            await self._finish(
                session,
                row,
                now,
                "suppressed",
                f"would expire before it may be sent ({reason})",
                attempts=row.attempts,
            )
            return
        await self.repo.set(
            session,
            row.notification_id,
            now,
            status="pending",
            attempts=row.attempts,
            next_attempt_at=until,
            reason=reason,
        )
        if row.reason != reason:  # report a deferral once, not on every sweep
            await self._report(session, row, now, "deferred", reason)

    def _slot(self, channel: str) -> asyncio.Semaphore:
        slot = self._slots.get(channel)
        if slot is None:
            slot = self._slots[channel] = asyncio.Semaphore(self.channels[channel].concurrency)
        return slot

    async def deliver(self, row: NotificationRow, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Send one claimed notification and record the outcome at once.

        The row becomes ``sending`` in a commit (shared with the sends handed over at the same
        moment) only at the last moment before the provider
        can take the message (the channel calls ``handover``: before the HTTP request, after SMTP
        RCPT and before DATA), so a crash leaves at most ``channel.concurrency`` messages per
        process whose outcome is unknown; everything merely claimed is safely retried.
        """
        status, reason, provider_id, retry_at, hard_bounce = "sent", None, None, None, False
        try:
            message = self._message(row)
        except Exception as exc:  # a template that cannot render is the request's fault, not the provider's
            message = None
            status, reason = "failed", f"template could not be rendered: {type(exc).__name__}"
        handed = False
        waves = self._waves_for(sessionmaker)

        async def handover() -> bool:
            nonlocal handed
            handed = await waves.handover(row.notification_id)
            return handed

        async with self._slot(row.channel):
            if message is not None:
                try:
                    result = await self.channels[row.channel].send(message, handover)
                    provider_id = result.provider_message_id
                except HandoverRefused:
                    return  # moved on meanwhile (another replica's recovery): not ours any more
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
                except AmbiguousSendError as exc:
                    # Left in "sending": recovery asks the provider after stale_after, or gives up.
                    if not handed:
                        await handover()
                    log.warning("send outcome unknown: %s", exc, extra={"notification_id": row.notification_id})
                    return
                except Exception as exc:
                    # Unknown whether the provider took it: never resend (at most once), report it.
                    log.exception("channel failed unexpectedly", extra={"notification_id": row.notification_id})
                    status, reason = "failed", f"outcome unknown: {type(exc).__name__}; not resent"
        await waves.record(_Outcome(row, status, reason, provider_id, retry_at, hard_bounce))

    async def release(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Give back the connection the group commit holds for ``sessionmaker`` (when a dispatcher stops)."""
        waves = self._waves.get(sessionmaker)
        if waves is not None and waves.loop is asyncio.get_running_loop():
            await waves.release()

    def _waves_for(self, sessionmaker: async_sessionmaker[AsyncSession]) -> _Waves:
        loop = asyncio.get_running_loop()
        waves = self._waves.get(sessionmaker)
        if waves is None or waves.loop is not loop:
            waves = self._waves[sessionmaker] = _Waves(self, sessionmaker, loop)
        return waves

    async def commit_wave(self, driver: Any, mark_ids: list[str], sent: list[_Outcome]) -> frozenset[str]:
        """A wave whose outcomes are all ``sent``, in one statement that is its own transaction on
        ``driver`` (the asyncpg connection, no transaction open): the marks, the outcomes and their
        delivery events, as :meth:`_Waves._commit` and :meth:`record_outcomes` would write them.
        Returns the ids that were still claimed (now sending)."""
        now = self.clock.now()
        events = []
        for o in sent:
            key = o.row.account_id
            events.append((DELIVERIES, key, shard_of(key), self._event_json(o.row, now, "sent", None, o.provider_id)))
        return await self.repo.commit_wave(
            driver,
            mark_ids,
            [(o.row.notification_id, o.provider_id) for o in sent],
            events,
            orjson.dumps(trace_headers()).decode(),
            now,
        )

    async def record_outcomes(self, session: AsyncSession, outcomes: list[_Outcome]) -> None:
        """Record what the providers said for a wave of sends: the accepted ones in one statement
        and their delivery events in another; the rest (retries, failures) one by one."""
        now = self.clock.now()
        sent = [o for o in outcomes if o.status == "sent"]
        await self.repo.record_sent_many(session, [(o.row.notification_id, o.provider_id) for o in sent], now)
        await self.outbox.add_many(
            session, [(DELIVERIES, self._event(o.row, now, "sent", None, o.provider_id)) for o in sent]
        )
        for o in outcomes:
            row, reason = o.row, o.reason
            if o.status == "sent":
                continue
            if o.status == "pending":
                await self.repo.set(
                    session, row.notification_id, now, status="pending", next_attempt_at=o.retry_at, reason=reason
                )
            else:
                if o.hard_bounce:
                    address = row.recipient.get("email" if row.channel == "email" else "phone", "")
                    await self.repo.suppress(
                        session, row.channel, address_hash(row.channel, address), "hard bounce", now
                    )
                await self._finish(session, row, now, "failed", reason)

    async def recover(self, session: AsyncSession, stale_after: timedelta, limit: int = 100) -> int:
        """Rows left in ``sending`` by a process that died between claiming and recording.

        The provider is asked whether it accepted the message (the SMS API can list what it
        took; an email is searched for by Message-ID when a lookup API is configured, otherwise
        SMTP cannot be asked). Accepted: recorded as sent. Certainly not accepted: pending
        again, so it is sent once. Cannot tell: reported failed "outcome unknown", never resent.
        """
        now = self.clock.now()
        claimed = await self.repo.stale_sending(session, now - stale_after, limit, status="claimed")
        for row in claimed:  # never handed to a provider: simply due again
            await self.repo.set(
                session,
                row.notification_id,
                now,
                status="pending",
                attempts=max(row.attempts - 1, 0),
                next_attempt_at=now,
            )
        rows = await self.repo.stale_sending(session, now - stale_after, limit)
        for row in rows:
            try:
                message = self._message(row)
                since = row.claimed_at or row.updated_at
                found = await self.channels[row.channel].lookup(message, since - timedelta(seconds=5))
            except OutcomeUnknown:
                await self._finish(
                    session,
                    row,
                    now,
                    "failed",
                    "outcome unknown: the sender stopped during the provider call; not resent",
                )
                continue
            except Exception as exc:  # provider unreachable: ask again on the next sweep, for a while
                log.warning(
                    "recovery lookup failed: %s", type(exc).__name__, extra={"notification_id": row.notification_id}
                )
                if now - (row.claimed_at or row.updated_at) >= LOOKUP_GIVE_UP:
                    await self._finish(
                        session,
                        row,
                        now,
                        "failed",
                        "outcome unknown: the provider could not be asked what it accepted for 24 hours; not resent",
                    )
                continue
            if found is not None:
                await self.repo.record_sent(session, row.notification_id, now, found.provider_message_id)
                await self._report(session, row, now, "sent", None, found.provider_message_id)
            else:
                await self.repo.set(
                    session,
                    row.notification_id,
                    now,
                    status="pending",
                    next_attempt_at=now,
                    reason="resending: the provider never received it",
                )
        return len(claimed) + len(rows)

    # ------------------------------------------------------------------ cases, webhooks, opt-outs

    async def on_case_closed(self, session: AsyncSession, event: CloudEvent, data: CaseEvent) -> None:
        """A resolved or written-off case: suppress what is still waiting, and anything later."""
        now = self.clock.now()
        reason = event.type.rsplit(".", 1)[-1].replace("_", " ")
        await self.repo.close_case(session, data.case_id, reason, now)
        for row in await self.repo.pending_for_case(session, data.case_id):
            if row.template in self.rules.after_close_templates:
                continue
            await self._finish(session, row, now, "suppressed", f"case {reason}")

    async def on_status_callback(self, session: AsyncSession, callback: StatusCallback) -> str:
        """Apply a provider status callback. Repeats and callbacks older than what is known change nothing."""
        now = self.clock.now()
        row = await self.repo.get_for_update(session, callback.notification_id)
        if row is None or row.channel != "sms":
            return "unknown notification"
        if row.provider_message_id and callback.message_sid and row.provider_message_id != callback.message_sid:
            return "not this notification's message"
        new_rank = PROVIDER_STATUS_RANK.get(callback.status)
        if new_rank is None:
            return "status not tracked"
        if new_rank <= PROVIDER_STATUS_RANK.get(row.provider_status or "", -1) or row.status in TERMINAL:
            return "already known"
        values: dict[str, Any] = {"provider_status": callback.status}
        if callback.message_sid and not row.provider_message_id:
            values["provider_message_id"] = callback.message_sid
        status: str | None = None
        reason: str | None = None
        if callback.status == "delivered":
            status = "delivered"
        elif callback.status in ("undelivered", "failed"):
            status = "failed"
            reason = f"provider reported {callback.status}" + (
                f" (error {callback.error_code})" if callback.error_code else ""
            )
            if callback.error_code in SMS_HARD_BOUNCE_CODES:
                await self.repo.suppress(
                    session, "sms", address_hash("sms", row.recipient.get("phone", "")), "hard bounce", now
                )
        if status is not None:
            values.update(status=status, reason=reason, next_attempt_at=None)
            if row.sent_at is None:
                values["sent_at"] = now
        await self.repo.set(session, row.notification_id, now, **values)
        if status is not None:
            await self._report(session, row, now, status, reason, callback.message_sid or row.provider_message_id)
        return status or callback.status

    async def on_inbound_sms(self, session: AsyncSession, sender: str, body: str) -> str | None:
        """STOP and its synonyms suppress the number; START and UNSTOP lift that (never a hard bounce)."""
        keyword = " ".join(body.strip().upper().split())
        hashed = address_hash("sms", sender)
        if keyword in STOP_KEYWORDS:
            await self.repo.suppress(session, "sms", hashed, OPT_OUT_REASON, self.clock.now())
            return "opted out"
        if keyword in START_KEYWORDS:
            await self.repo.unsuppress(session, "sms", hashed, [OPT_OUT_REASON])
            return "opted in"
        return None

    async def unsubscribe(self, session: AsyncSession, token: str) -> str:
        """Suppress the address a signed unsubscribe link names; raises ValueError for a bad link."""
        verified = self.signer.verify(token)
        if verified is None:
            raise ValueError("this unsubscribe link is not valid")
        channel, hashed = verified
        await self.repo.suppress(session, channel, hashed, "unsubscribe link", self.clock.now())
        return channel

    def _message(self, row: NotificationRow) -> Message:
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
        self,
        session: AsyncSession,
        row: NotificationRow,
        now: datetime,
        status: str,
        reason: str | None,
        **values: Any,
    ) -> None:
        await self.repo.set(
            session, row.notification_id, now, status=status, reason=reason, next_attempt_at=None, **values
        )
        await self._report(session, row, now, status, reason)

    async def _report(
        self,
        session: AsyncSession,
        row: NotificationRow,
        now: datetime,
        status: str,
        reason: str | None,
        provider_id: str | None = None,
    ) -> None:
        await self.outbox.add(session, DELIVERIES, self._event(row, now, status, reason, provider_id))

    def _event(
        self, row: NotificationRow, now: datetime, status: str, reason: str | None, provider_id: str | None
    ) -> CloudEvent:
        return new_event(
            type=DELIVERY_UPDATED,
            source=SOURCE,
            subject=row.account_id,
            data=self._update(row, now, status, reason, provider_id),
            time=now,
        )

    def _event_json(
        self, row: NotificationRow, now: datetime, status: str, reason: str | None, provider_id: str | None
    ) -> bytes:
        """The bytes ``_event(...).to_json()`` gives (a new id), without building the envelope model."""
        update = self._update(row, now, status, reason, provider_id)
        return event_json(
            type=DELIVERY_UPDATED,
            source=SOURCE,
            subject=row.account_id,
            time=now,
            id=str(uuid.uuid4()),
            data_json=update.model_dump_json(exclude_none=True),
        )

    def _update(
        self, row: NotificationRow, now: datetime, status: str, reason: str | None, provider_id: str | None
    ) -> DeliveryUpdated:
        # Every outcome passes here once (a deferral only when its reason changes). Counted when recorded;
        # a transaction that then rolls back is re-run and counted again, so the count can only run high.
        _counter(row.channel, status).inc()
        return DeliveryUpdated(
            notification_id=row.notification_id,
            case_id=row.case_id,
            account_id=row.account_id,
            channel=row.channel,
            status=status,
            reason=reason,
            provider_message_id=provider_id,
            at=now,
        )


@dataclass(frozen=True)
class _Outcome:
    row: NotificationRow
    status: str  # sent | pending (retry at retry_at) | failed
    reason: str | None
    provider_id: str | None
    retry_at: datetime | None
    hard_bounce: bool


# The most sends whose marks (or outcomes) go in one statement.
MAX_WAVE = 256
# How long the group commit keeps its connection between waves before it gives it back (and the
# next wave checks one out again, pre-pinged).
HOLD_IDLE_SECONDS = 5.0


async def _checkout(engine: AsyncEngine) -> tuple[AsyncConnection, Any]:
    """A connection from the pool, and the driver's (asyncpg's) connection under it."""
    connection = await engine.connect()
    try:
        return connection, (await connection.get_raw_connection()).driver_connection
    except BaseException:
        await connection.close()
        raise


class _Waves:
    """Group commit for the sends running at once in one process.

    The sends that reach their hand-over together are marked ``sending`` in one UPDATE and the
    outcomes that arrive together are recorded with it, in one transaction and one commit (a
    send's outcome is only queued after its own mark was committed, so one wave never holds
    both for the same message). Each send waits for that commit: before the provider may take
    its message, and before its outcome counts as recorded. A flush starts as soon as the first
    item is queued (after one turn of the event loop, so that sends woken together share it);
    what arrives while it runs forms the next wave. So nothing waits for a timer, and under load
    round trips and commits are shared by many messages: one transaction for the marks of some
    sends and the outcomes of others, rather than one for each kind. A wave whose outcomes are all
    ``sent`` is one statement (its own transaction: one round trip). Waves run on one connection,
    checked out of the pool (and pre-pinged) once and kept while waves follow each other within
    ``HOLD_IDLE_SECONDS``, rather than per wave or per run of waves.
    """

    def __init__(
        self,
        service: DeliveryService,
        sessionmaker: async_sessionmaker[AsyncSession],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.service = service
        self.sessionmaker = sessionmaker
        self.loop = loop
        self._handovers: list[tuple[str, asyncio.Future[bool]]] = []
        self._outcomes: list[tuple[_Outcome, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._held: tuple[AsyncConnection, Any] | None = None  # a connection and its driver's
        self._idle_since = 0.0
        self.transactions = 0  # committed or attempted, for tests and profiling

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._flush())

    async def handover(self, notification_id: str) -> bool:
        """Commit ``notification_id`` as sending (with whatever else is handed over or recorded
        now); False if it moved on meanwhile. Returns only after the commit."""
        future: asyncio.Future[bool] = self.loop.create_future()
        self._handovers.append((notification_id, future))
        self._kick()
        return await future

    async def record(self, outcome: _Outcome) -> None:
        """Record ``outcome`` (with whatever else arrives now); returns after the commit."""
        future: asyncio.Future[None] = self.loop.create_future()
        self._outcomes.append((outcome, future))
        self._kick()
        await future

    def _take(
        self,
    ) -> tuple[list[tuple[str, asyncio.Future[bool]]], list[tuple[_Outcome, asyncio.Future[None]]]]:
        handovers, self._handovers = self._handovers[:MAX_WAVE], self._handovers[MAX_WAVE:]
        outcomes, self._outcomes = self._outcomes[:MAX_WAVE], self._outcomes[MAX_WAVE:]
        return handovers, outcomes

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        engine = getattr(self.sessionmaker, "kw", {}).get("bind")
        while self._handovers or self._outcomes:
            if not isinstance(engine, AsyncEngine):
                await self._wave(None, *self._take())
                continue
            # One connection (one pool check-out with its pre-ping) for back-to-back waves, each its
            # own transaction on it, kept for the next run of waves while they follow within
            # HOLD_IDLE_SECONDS of each other; after a failed wave, or a longer pause, the next
            # starts on a fresh check-out.
            if self._held is not None and self.loop.time() - self._idle_since > HOLD_IDLE_SECONDS:
                await self._drop()
            if self._held is None:
                try:
                    self._held = await _checkout(engine)
                except Exception as exc:  # could not connect: that wave fails, the next tries again
                    handovers, outcomes = self._take()
                    _fail(handovers, exc)
                    _fail(outcomes, exc)
                    continue
            connection, driver = self._held
            while self._handovers or self._outcomes:
                if not await self._wave(connection, *self._take(), driver=driver):
                    await self._drop()
                    break
            self._idle_since = self.loop.time()

    async def release(self) -> None:
        """Give the held connection back, once the waves queued so far are committed."""
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task])
        await self._drop()

    async def _drop(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                await held[0].close()

    async def _wave(
        self,
        connection: AsyncConnection | None,
        handovers: list[tuple[str, asyncio.Future[bool]]],
        outcomes: list[tuple[_Outcome, asyncio.Future[None]]],
        driver: Any = None,
    ) -> bool:
        """Commit one wave and settle its futures; False if any of it failed."""
        try:
            try:
                handed = await self._commit(handovers, outcomes, connection, driver)
                ok = True
            except Exception:
                ok = False
                if not (handovers and outcomes) and len(outcomes) <= 1:
                    raise
                # Apart (each on a fresh session), so that one outcome that cannot be recorded
                # holds up neither the marks nor the other outcomes.
                handed = await self._commit_apart(handovers, outcomes)
        except BaseException as exc:
            _fail(handovers, exc)
            _fail(outcomes, exc)
            if not isinstance(exc, Exception):
                _fail(self._handovers, exc)
                _fail(self._outcomes, exc)
                raise
            return False
        for nid, future in handovers:
            if not future.done():
                future.set_result(nid in handed)
        for _, done in outcomes:
            if not done.done():
                done.set_result(None)
        return ok

    async def _commit(
        self,
        handovers: Sequence[tuple[str, asyncio.Future[bool]]],
        outcomes: Sequence[tuple[_Outcome, asyncio.Future[None]]],
        connection: AsyncConnection | None = None,
        driver: Any = None,
    ) -> frozenset[str]:
        """Marks and outcomes in one transaction (on ``connection`` if given); the ids that were
        still claimed. With ``driver`` (``connection``'s asyncpg connection) a wave whose outcomes
        are all ``sent`` (the usual case) is one statement (:meth:`DeliveryService.commit_wave`)."""
        self.transactions += 1
        if driver is not None and all(o.status == "sent" for o, _ in outcomes):
            return await self.service.commit_wave(driver, [nid for nid, _ in handovers], [o for o, _ in outcomes])
        handed: frozenset[str] = frozenset()
        session = self.sessionmaker() if connection is None else self.sessionmaker(bind=connection)
        async with session, session.begin():
            if handovers:
                handed = await self.service.repo.mark_sending_many(
                    session, [nid for nid, _ in handovers], self.service.clock.now()
                )
            if outcomes:
                await self.service.record_outcomes(session, [o for o, _ in outcomes])
        return handed

    async def _commit_apart(
        self,
        handovers: Sequence[tuple[str, asyncio.Future[bool]]],
        outcomes: Sequence[tuple[_Outcome, asyncio.Future[None]]],
    ) -> frozenset[str]:
        """After a failed wave: the marks alone, then each outcome alone. What fails has its
        future failed here; returns the ids marked sending."""
        handed: frozenset[str] = frozenset()
        if handovers:
            try:
                handed = await self._commit(handovers, ())
            except Exception as exc:
                _fail(handovers, exc)
        for item in outcomes:
            try:
                await self._commit((), (item,))
            except Exception as exc:
                _fail([item], exc)
        return handed


def _fail(items: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in items:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)


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
        stale_after: timedelta = STALE_SENDING,
    ) -> None:
        self.stale_after = stale_after
        self.service = service
        self.sessionmaker = sessionmaker
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.on_commit = on_commit
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._claims: AsyncConnection | None = None  # held for the claims of a run

    @contextlib.asynccontextmanager
    async def _claim_session(self) -> AsyncIterator[AsyncSession]:
        """A session for one claim, on a connection held from claim to claim (checked out of the
        pool, with its pre-ping, once rather than per claim); after a failure, the next claim checks
        out a fresh one."""
        engine = getattr(self.sessionmaker, "kw", {}).get("bind")
        if not isinstance(engine, AsyncEngine):
            async with self.sessionmaker() as session:
                yield session
            return
        if self._claims is None:
            self._claims = await engine.connect()
        try:
            async with self.sessionmaker(bind=self._claims) as session:
                yield session
        except BaseException:
            await self._release_claims()
            raise

    async def _release_claims(self) -> None:
        connection, self._claims = self._claims, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def dispatch_once(self) -> int:
        async with self.sessionmaker() as session, session.begin():
            rows = await self.service.claim(session, self.concurrency * 4)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(row: NotificationRow) -> None:
            async with sem:
                await self.service.deliver(row, self.sessionmaker)

        await asyncio.gather(*(one(r) for r in rows))
        await self.service.release(self.sessionmaker)
        if callable(self.on_commit):
            self.on_commit()
        return len(rows)

    async def run(self, until_idle: bool = False) -> None:
        """Claim and send continuously: a new batch is claimed as soon as there is room, while
        earlier sends are still running (at most ``concurrency`` in flight; each channel's own
        limit bounds its provider calls). ``until_idle`` returns once nothing is due or in flight."""
        recovered_at = 0.0
        loop = asyncio.get_running_loop()
        inflight: set[asyncio.Task[None]] = set()
        while not self._stop.is_set():
            claimed = 0
            try:
                if loop.time() - recovered_at > min(30.0, self.stale_after.total_seconds()):
                    recovered_at = loop.time()
                    async with self.sessionmaker() as session, session.begin():
                        await self.service.recover(session, self.stale_after)
                room = self.concurrency - len(inflight)
                if room >= max(1, self.concurrency // 4):
                    async with self._claim_session() as session, session.begin():
                        rows = await self.service.claim(session, room)
                    claimed = len(rows)
                    for row in rows:
                        task = asyncio.create_task(self.service.deliver(row, self.sessionmaker))
                        inflight.add(task)
                        task.add_done_callback(self._finished(inflight))
            except Exception:
                log.exception("dispatch failed; retrying")
            if claimed:
                continue
            if inflight:
                await asyncio.wait(inflight, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                continue
            if until_idle:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
        await self._release_claims()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        await self.service.release(self.sessionmaker)

    def _finished(self, inflight: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery task failed", exc_info=task.exception())
            if callable(self.on_commit):
                self.on_commit()

        return done
