"""The notifier's delivery path against the real database, a real SMTP server (aiosmtpd) and the
local Twilio-compatible HTTP SMS provider: sending, contact rules, suppression, retries, the circuit
breaker, recovery after a crash, and every decision reported on collections.deliveries.v1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from arrears_dev.stack import free_port
from arrears_notifier.channels.base import (
    AmbiguousSendError,
    Channel,
    Handover,
    Message,
    OutcomeUnknown,
    SendResult,
    TransientSendError,
)
from arrears_notifier.channels.breaker import BreakingChannel, CircuitBreaker
from arrears_notifier.channels.email import SmtpChannel, message_id
from arrears_notifier.channels.segments import measure
from arrears_notifier.channels.sms import TwilioSmsChannel
from arrears_notifier.deliveries import service as service_module
from arrears_notifier.deliveries.service import (
    ContactRules,
    DeliveryService,
    Dispatcher,
    LinkSigner,
    StatusCallback,
    _Outcome,
    address_hash,
)
from arrears_notifier.models import notifications, outbox, suppressions
from arrears_notifier.templates.render import Renderer
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_sessionmaker
from arrears_shared.events.envelope import new_event
from arrears_shared.events.v1 import CaseEvent, NotificationRequested
from arrears_shared.messaging.outbox import Outbox
from tests.notifier.providers import RecordingHandler, SmsProvider, mail_sink, sms_provider, smtp_server
from tests.test_e2e_flow import daytime_zone

SID, TOKEN = "ACtest", "test-token"
PUBLIC = "http://notifier.test"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[int, RecordingHandler]]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def sms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmsProvider]:
    with sms_provider(tmp_path_factory.mktemp("sms") / "messages.jsonl", TOKEN) as provider:
        yield provider


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


def make_service(
    smtp_port: int, sms: SmsProvider, clock: FixedClock, channels: dict[str, Channel] | None = None, cap: int = 3
) -> DeliveryService:
    return DeliveryService(
        outbox=Outbox(outbox),
        clock=clock,
        renderer=Renderer(),
        channels=channels
        or {
            "email": SmtpChannel(host="127.0.0.1", port=smtp_port, sender="collections@arrears.test"),
            "sms": TwilioSmsChannel(
                api_base=sms.base_url,
                account_sid=SID,
                auth_token=TOKEN,
                sender="+15005550006",
                status_callback=f"{PUBLIC}/v1/webhooks/sms/status",
            ),
        },
        rules=ContactRules(8, 21, cap, 3),
        signer=LinkSigner("test-secret"),
        public_base_url=PUBLIC,
    )


@pytest.fixture
async def service(
    smtp: tuple[int, RecordingHandler], sms: SmsProvider, clock: FixedClock
) -> AsyncIterator[DeliveryService]:
    svc = make_service(smtp[0], sms, clock)
    yield svc
    for channel in svc.channels.values():
        await channel.close()


@pytest.fixture
def checkouts(engine: AsyncEngine) -> Iterator[list[object]]:
    """The connections checked out of ``engine``'s pool during the test."""
    seen: list[object] = []

    def counted(*args: object) -> None:
        seen.append(args)

    event.listen(engine.sync_engine.pool, "checkout", counted)
    yield seen
    event.remove(engine.sync_engine.pool, "checkout", counted)


def variables() -> dict[str, Any]:
    return {
        "customer_name": "Erika Mustermann",
        "invoices": [{"number": "2026-0001", "open": "€1,234.50", "due_date": "2026-01-10"}],
        "total_due": "€1,234.50",
        "max_days_past_due": 10,
        "deadline": "2026-02-01",
        "payment_link": "https://pay.example.com/a/ACC-1",
    }


def new_request(channel: str = "email", **overrides: Any) -> NotificationRequested:
    account = overrides.pop("account_id", f"ACC-{uuid.uuid4().hex[:8]}")
    fields: dict[str, Any] = {
        "notification_id": f"N-{uuid.uuid4().hex}",
        "case_id": f"CASE-{uuid.uuid4().hex[:8]}",
        "account_id": account,
        "channel": channel,
        "template": "overdue_polite",
        "locale": "en",
        "recipient": {
            "email": f"{account.lower()}@example.com" if channel == "email" else None,
            "phone": f"+4915{uuid.uuid4().int % 10**9:09d}" if channel == "sms" else None,
            "timezone": daytime_zone(),
        },
        "variables": variables(),
    }
    fields.update(overrides)
    return NotificationRequested.model_validate(fields)


async def submit(service: DeliveryService, sm: async_sessionmaker[AsyncSession], req: NotificationRequested) -> None:
    event = new_event(
        type="collections.notification.requested",
        source="test",
        subject=req.account_id,
        data=req,
        time=service.clock.now(),
    )
    async with sm() as session, session.begin():
        await service.on_requested(session, event, req)


async def dispatch(service: DeliveryService, sm: async_sessionmaker[AsyncSession]) -> int:
    return await Dispatcher(service, sm, concurrency=10, poll_seconds=0.1).dispatch_once()


async def row(sm: async_sessionmaker[AsyncSession], notification_id: str) -> Any:
    async with sm() as session:
        return (
            await session.execute(select(notifications).where(notifications.c.notification_id == notification_id))
        ).one()


async def reported(sm: async_sessionmaker[AsyncSession], notification_id: str) -> list[dict[str, Any]]:
    """The delivery updates written to the outbox for one notification, oldest first."""
    async with sm() as session:
        payloads = (
            await session.execute(select(outbox.c.payload).where(outbox.c.topic == "collections.deliveries.v1"))
        ).scalars()
        events = [orjson.loads(p) for p in payloads]
    return [e["data"] for e in events if e["data"]["notification_id"] == notification_id]


async def test_email_is_sent_once_as_multipart_with_unsubscribe_and_reported(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], smtp: tuple[int, RecordingHandler]
) -> None:
    req = new_request("email")
    await submit(service, sessionmaker, req)
    await submit(service, sessionmaker, req)  # a redelivered request changes nothing
    assert await dispatch(service, sessionmaker) >= 1
    await dispatch(service, sessionmaker)
    mails = smtp[1].to(str(req.recipient.email))
    assert len(mails) == 1
    mail = mails[0]
    assert mail["List-Unsubscribe"].startswith(f"<{PUBLIC}/v1/unsubscribe?token=")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "https://pay.example.com/a/ACC-1" in plain.get_content()
    assert "January 10, 2026" in plain.get_content()
    assert "/v1/unsubscribe?token=" in html.get_content()
    stored = await row(sessionmaker, req.notification_id)
    assert stored.status == "sent"
    assert stored.provider_message_id
    assert [u["status"] for u in await reported(sessionmaker, req.notification_id)] == ["sent"]


async def test_sms_fits_two_segments_carries_opt_out_and_status_callbacks_are_idempotent(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], sms: SmsProvider
) -> None:
    long_total = ", ".join(f"€{n},234.50" for n in range(1, 30))
    req = new_request("sms", template="notice_of_intent", variables={**variables(), "total_due": long_total})
    await submit(service, sessionmaker, req)
    await dispatch(service, sessionmaker)
    texts = sms.messages(str(req.recipient.phone))
    assert len(texts) == 1
    body = texts[0]["body"]
    assert measure(body).segments <= 2
    assert body.endswith("https://pay.example.com/a/ACC-1 Reply STOP to opt out.")
    sid = texts[0]["sid"]
    assert texts[0]["status_callback"].endswith(f"?nid={req.notification_id}")

    async def callback(status: str, code: str | None = None) -> str:
        async with sessionmaker() as session, session.begin():
            return await service.on_status_callback(session, StatusCallback(req.notification_id, sid, status, code))

    assert await callback("sent") == "sent"
    assert await callback("delivered") == "delivered"
    assert await callback("delivered") == "already known"  # a repeat
    assert await callback("sent") == "already known"  # out of order: never moves back
    assert await callback("undelivered", "30003") == "already known"
    stored = await row(sessionmaker, req.notification_id)
    assert stored.status == "delivered"
    assert stored.provider_message_id == sid
    assert [u["status"] for u in await reported(sessionmaker, req.notification_id)] == ["sent", "delivered"]


async def test_callback_before_our_own_record_is_kept(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    req = new_request("sms")
    await submit(service, sessionmaker, req)
    async with sessionmaker() as session, session.begin():
        await service.claim(session, 1000)
        await service.repo.mark_sending(session, req.notification_id, service.clock.now())
    async with sessionmaker() as session, session.begin():
        assert (
            await service.on_status_callback(
                session, StatusCallback(req.notification_id, "SMfast", "undelivered", "30006")
            )
            == "failed"
        )
    async with sessionmaker() as session, session.begin():
        await service.repo.record_sent(session, req.notification_id, service.clock.now(), "SMfast")
    stored = await row(sessionmaker, req.notification_id)
    assert stored.status == "failed"  # the provider's later word is not overwritten by our "sent"
    assert "30006" in stored.reason
    async with sessionmaker() as session:
        assert await service.repo.is_suppressed(session, "sms", address_hash("sms", str(req.recipient.phone)))


async def test_outside_contact_hours_defers_to_the_next_local_morning(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    clock.set(datetime(2026, 3, 28, 22, 30, tzinfo=UTC))  # 23:30 in Berlin, the night before DST starts
    req = new_request("email", recipient={"email": "night@example.com", "timezone": "Europe/Berlin"})
    await submit(service, sessionmaker, req)
    await dispatch(service, sessionmaker)
    stored = await row(sessionmaker, req.notification_id)
    assert stored.status == "pending"
    assert stored.attempts == 0  # claimed, held back: not an attempt
    assert stored.next_attempt_at == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)  # 08:00 CEST
    updates = await reported(sessionmaker, req.notification_id)
    assert [u["status"] for u in updates] == ["deferred"]
    assert "contact hours" in updates[0]["reason"]


async def test_cap_per_account_and_channel_over_rolling_seven_days(
    smtp: tuple[int, RecordingHandler], sms: SmsProvider, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    service = make_service(smtp[0], sms, clock, cap=2)
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    reqs = [new_request("email", account_id=account) for _ in range(3)]
    for i, req in enumerate(reqs[:2]):
        await submit(service, sessionmaker, req)
        await dispatch(service, sessionmaker)
        clock.advance(timedelta(hours=1 + i))
    await submit(service, sessionmaker, reqs[2])
    await dispatch(service, sessionmaker)
    third = await row(sessionmaker, reqs[2].notification_id)
    first = await row(sessionmaker, reqs[0].notification_id)
    assert third.status == "pending"
    assert third.attempts == 0
    assert first.attempts == 1
    assert third.next_attempt_at == first.sent_at + timedelta(days=7)
    assert "per 7 days" in third.reason
    await service.channels["email"].close()


async def test_stop_keyword_suppresses_and_start_lifts_it(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], sms: SmsProvider
) -> None:
    req = new_request("sms")
    phone = str(req.recipient.phone)
    async with sessionmaker() as session, session.begin():
        assert await service.on_inbound_sms(session, phone, "  opt   out ") == "opted out"
    await submit(service, sessionmaker, req)
    await dispatch(service, sessionmaker)
    assert (await row(sessionmaker, req.notification_id)).status == "suppressed"
    assert sms.messages(phone) == []
    async with sessionmaker() as session, session.begin():
        assert await service.on_inbound_sms(session, phone, "START") == "opted in"
        assert not await service.repo.is_suppressed(session, "sms", address_hash("sms", phone))
        assert await service.on_inbound_sms(session, phone, "hello, I will pay friday") is None


async def test_unsubscribe_link_suppresses_the_address(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    req = new_request("email")
    token = service.signer.sign("email", address_hash("email", str(req.recipient.email).upper()))
    async with sessionmaker() as session, session.begin():
        assert await service.unsubscribe(session, token) == "email"
    with pytest.raises(ValueError, match="not valid"):
        async with sessionmaker() as session, session.begin():
            await service.unsubscribe(session, token[:-1] + ("0" if token[-1] != "0" else "1"))
    await submit(service, sessionmaker, req)
    await dispatch(service, sessionmaker)
    stored = await row(sessionmaker, req.notification_id)
    assert stored.status == "suppressed"
    assert [u["status"] for u in await reported(sessionmaker, req.notification_id)] == ["suppressed"]


async def test_resolved_case_suppresses_waiting_and_later_requests(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    waiting = new_request("email", not_before=clock.now() + timedelta(hours=2))
    late = new_request("sms", case_id=waiting.case_id, account_id=waiting.account_id)
    await submit(service, sessionmaker, waiting)
    data = CaseEvent(case_id=waiting.case_id, account_id=waiting.account_id, status="paid")
    event = new_event(
        type="collections.case.resolved", source="test", subject=waiting.account_id, data=data, time=clock.now()
    )
    async with sessionmaker() as session, session.begin():
        await service.on_case_closed(session, event, data)
    await submit(service, sessionmaker, late)
    clock.advance(timedelta(hours=3))
    await dispatch(service, sessionmaker)
    for req in (waiting, late):
        stored = await row(sessionmaker, req.notification_id)
        assert stored.status == "suppressed"
        assert stored.reason == "case resolved"


async def test_expired_request_is_suppressed(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    req = new_request("email", expires_at=clock.now() + timedelta(minutes=5))
    await submit(service, sessionmaker, req)
    clock.advance(timedelta(minutes=6))
    await dispatch(service, sessionmaker)
    stored = await row(sessionmaker, req.notification_id)
    assert stored.status == "suppressed"
    assert "expired" in stored.reason


async def test_smtp_5xx_recipient_fails_and_suppresses_smtp_4xx_retries_later(
    service: DeliveryService,
    sessionmaker: async_sessionmaker[AsyncSession],
    smtp: tuple[int, RecordingHandler],
    clock: FixedClock,
) -> None:
    hard, soft = new_request("email"), new_request("email")
    smtp[1].refuse[str(hard.recipient.email)] = "550 5.1.1 no such user"
    smtp[1].refuse[str(soft.recipient.email)] = "451 4.7.1 try again later"
    for req in (hard, soft):
        await submit(service, sessionmaker, req)
    await dispatch(service, sessionmaker)
    failed, retrying = await row(sessionmaker, hard.notification_id), await row(sessionmaker, soft.notification_id)
    assert failed.status == "failed"
    assert "550" in failed.reason
    async with sessionmaker() as session:
        assert await service.repo.is_suppressed(session, "email", address_hash("email", str(hard.recipient.email)))
    assert retrying.status == "pending"
    assert "451" in retrying.reason
    # Exponential backoff with jitter: the first retry waits 30 s ± 50 %.
    assert clock.now() + timedelta(seconds=15) <= retrying.next_attempt_at <= clock.now() + timedelta(seconds=45)
    # After max_attempts (3 here) the transient failure becomes a failure with its reason.
    for _ in range(2):
        clock.set(retrying.next_attempt_at)
        await dispatch(service, sessionmaker)
        retrying = await row(sessionmaker, soft.notification_id)
    assert retrying.status == "failed"
    assert retrying.attempts == 3
    assert smtp[1].to(str(soft.recipient.email)) == []
    del smtp[1].refuse[str(hard.recipient.email)], smtp[1].refuse[str(soft.recipient.email)]


async def test_sms_4xx_is_permanent_and_5xx_opens_the_circuit(
    smtp: tuple[int, RecordingHandler], sms: SmsProvider, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    down = TwilioSmsChannel(api_base=sms.base_url + "/down", account_sid=SID, auth_token=TOKEN, sender="+15005550006")
    ticks = [0.0]
    breaker = CircuitBreaker(threshold=2, cool_down=30, monotonic=lambda: ticks[0])
    service = make_service(smtp[0], sms, clock, channels={"sms": BreakingChannel(down, breaker)})
    reqs = [new_request("sms") for _ in range(3)]
    for req in reqs:
        await submit(service, sessionmaker, req)
    # the sink answers 404 under /down: a 4xx, permanent, so it does not count against the provider
    await dispatch(service, sessionmaker)
    assert {(await row(sessionmaker, r.notification_id)).status for r in reqs} == {"failed"}
    assert breaker.state == "closed"

    class Flaky(Channel):
        name = "sms"
        calls = 0

        async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
            Flaky.calls += 1
            raise TransientSendError("SMS provider 503")

    service = make_service(smtp[0], sms, clock, channels={"sms": BreakingChannel(Flaky(), breaker)})
    reqs = [new_request("sms") for _ in range(4)]
    for req in reqs:
        await submit(service, sessionmaker, req)
    await Dispatcher(service, sessionmaker, concurrency=1, poll_seconds=0.1).dispatch_once()
    assert Flaky.calls == 2  # the circuit opened after two failures; the rest were not attempted
    assert breaker.state == "open"
    reasons = {(await row(sessionmaker, r.notification_id)).reason for r in reqs}
    assert reasons == {"SMS provider 503", "provider circuit open after repeated failures; not attempted"}
    assert {(await row(sessionmaker, r.notification_id)).status for r in reqs} == {"pending"}
    ticks[0] = 31
    assert breaker.state == "half-open"
    await down.close()


async def test_recovery_asks_the_sms_provider_and_never_resends_blind(
    service: DeliveryService,
    sessionmaker: async_sessionmaker[AsyncSession],
    sms: SmsProvider,
    smtp: tuple[int, RecordingHandler],
    clock: FixedClock,
) -> None:
    taken, lost, mail = new_request("sms"), new_request("sms"), new_request("email")
    for req in (taken, lost, mail):
        await submit(service, sessionmaker, req)
    async with sessionmaker() as session, session.begin():
        claimed = await service.claim(session, 1000)
        for r in claimed:  # each handed to its provider, as deliver() does right before the call
            await service.repo.mark_sending(session, r.notification_id, clock.now())
    by_id = {r.notification_id: r for r in claimed}
    # The provider accepted ``taken`` and the process died before recording it; ``lost`` and
    # ``mail`` were claimed but never reached their providers.
    result = await service.channels["sms"].send(service._message(by_id[taken.notification_id]))
    clock.advance(timedelta(minutes=3))
    async with sessionmaker() as session, session.begin():
        await service.recover(session, timedelta(minutes=2))
    assert (await row(sessionmaker, taken.notification_id)).status == "sent"
    assert (await row(sessionmaker, taken.notification_id)).provider_message_id == result.provider_message_id
    assert (await row(sessionmaker, lost.notification_id)).status == "pending"
    unknown = await row(sessionmaker, mail.notification_id)
    assert unknown.status == "failed"
    assert unknown.reason.startswith("outcome unknown")
    await dispatch(service, sessionmaker)
    assert len(sms.messages(str(taken.recipient.phone))) == 1
    assert len(sms.messages(str(lost.recipient.phone))) == 1
    assert smtp[1].to(str(mail.recipient.email)) == []


async def test_personal_data_never_reaches_logs_or_reasons(
    service: DeliveryService,
    sessionmaker: async_sessionmaker[AsyncSession],
    smtp: tuple[int, RecordingHandler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    req = new_request("email")
    smtp[1].refuse[str(req.recipient.email)] = "550 5.1.1 no such user"
    await submit(service, sessionmaker, req)
    await dispatch(service, sessionmaker)
    stored = await row(sessionmaker, req.notification_id)
    everything = caplog.text + str(stored.reason) + str(await reported(sessionmaker, req.notification_id))
    assert str(req.recipient.email) not in everything
    assert "Erika" not in everything
    async with sessionmaker() as session:
        rows = (await session.execute(select(suppressions.c.address_hash))).scalars().all()
    assert str(req.recipient.email) not in rows


async def test_an_ambiguous_send_is_never_retried_blindly(
    smtp: tuple[int, RecordingHandler],
    sms: SmsProvider,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))

    class Timeout(Channel):
        name = "sms"
        calls = 0

        async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
            Timeout.calls += 1
            assert handover is not None
            assert await handover()
            raise AmbiguousSendError("SMS provider did not answer: ReadTimeout")

        async def lookup(self, message: Message, since: datetime) -> SendResult | None:
            return SendResult("SMlate")  # the provider had taken it after all

    service = make_service(smtp[0], sms, clock, channels={"sms": Timeout()})
    req = new_request("sms")
    await submit(service, sessionmaker, req)
    await dispatch(service, sessionmaker)
    await dispatch(service, sessionmaker)
    assert Timeout.calls == 1
    assert (await row(sessionmaker, req.notification_id)).status == "sending"
    clock.advance(timedelta(minutes=3))
    async with sessionmaker() as session, session.begin():
        await service.recover(session, timedelta(minutes=2))
    stored = await row(sessionmaker, req.notification_id)
    assert stored.status == "sent"
    assert stored.provider_message_id == "SMlate"
    assert Timeout.calls == 1


async def test_concurrent_sends_share_the_sending_commit_and_the_outcome_commit(
    smtp: tuple[int, RecordingHandler],
    sms: SmsProvider,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    seen: dict[str, str] = {}

    class Checking(Channel):
        name = "sms"
        concurrency = 8

        async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
            assert handover is not None
            assert await handover()
            # What another connection sees when the provider takes the message: already committed.
            async with sessionmaker() as other:
                seen[message.notification_id] = (
                    await other.execute(
                        select(notifications.c.status).where(notifications.c.notification_id == message.notification_id)
                    )
                ).scalar_one()
            return SendResult(f"SM{message.notification_id[-8:]}")

    service = make_service(smtp[0], sms, clock, channels={"sms": Checking()})
    marks: list[int] = []
    outcomes: list[int] = []
    mark_many, record_many = service.repo.mark_sending_many, service.repo.record_sent_many

    async def counting_marks(session: AsyncSession, notification_ids: list[str], now: datetime) -> frozenset[str]:
        marks.append(len(notification_ids))
        return await mark_many(session, notification_ids, now)

    async def counting_outcomes(session: AsyncSession, sent: list[tuple[str, str | None]], now: datetime) -> None:
        outcomes.append(len(sent))
        await record_many(session, sent, now)

    commit_wave = service.repo.commit_wave
    one_statement_waves: list[int] = []

    async def counting_waves(
        connection: Any, mark_ids: list[str], sent: list[tuple[str, str | None]], *rest: Any
    ) -> frozenset[str]:
        one_statement_waves.append(len(mark_ids) + len(sent))
        if mark_ids:
            marks.append(len(mark_ids))
        if sent:
            outcomes.append(len(sent))
        return await commit_wave(connection, mark_ids, sent, *rest)

    service.repo.mark_sending_many = counting_marks  # type: ignore[method-assign]
    service.repo.record_sent_many = counting_outcomes  # type: ignore[method-assign]
    service.repo.commit_wave = counting_waves  # type: ignore[method-assign,assignment]
    requests = [new_request("sms") for _ in range(24)]
    for req in requests:
        await submit(service, sessionmaker, req)
    assert await Dispatcher(service, sessionmaker, concurrency=24, poll_seconds=0.1).dispatch_once() == 24
    assert seen == {req.notification_id: "sending" for req in requests}
    assert sum(marks) == 24
    assert max(marks) > 1  # sends handed over together shared one statement and one commit
    assert sum(outcomes) == 24
    assert max(outcomes) > 1
    assert one_statement_waves  # all sent: those waves were each one statement
    for req in requests:
        stored = await row(sessionmaker, req.notification_id)
        assert stored.status == "sent"
        assert stored.provider_message_id == f"SM{req.notification_id[-8:]}"
        assert [u["status"] for u in await reported(sessionmaker, req.notification_id)] == ["sent"]


async def test_recovery_looks_an_email_up_by_message_id_when_a_lookup_api_is_configured(
    sms: SmsProvider,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    with mail_sink(tmp_path / "mail") as sink:
        email = SmtpChannel(
            host="127.0.0.1", port=sink.smtp_port, sender="collections@arrears.test", lookup_url=sink.api_url
        )
        service = make_service(sink.smtp_port, sms, clock, channels={"email": email})
        taken, lost = new_request("email"), new_request("email")
        for req in (taken, lost):
            await submit(service, sessionmaker, req)
        async with sessionmaker() as session, session.begin():
            claimed = await service.claim(session, 1000)
            for r in claimed:
                await service.repo.mark_sending(session, r.notification_id, clock.now())
        by_id = {r.notification_id: r for r in claimed}
        # The relay accepted ``taken`` and the process died before recording it; ``lost`` was
        # marked sending but never reached the relay.
        result = await email.send(service._message(by_id[taken.notification_id]))
        assert result.provider_message_id == message_id(taken.notification_id)
        clock.advance(timedelta(minutes=3))
        async with sessionmaker() as session, session.begin():
            await service.recover(session, timedelta(minutes=2))
        stored = await row(sessionmaker, taken.notification_id)
        assert stored.status == "sent"
        assert stored.provider_message_id == message_id(taken.notification_id)
        assert (await row(sessionmaker, lost.notification_id)).status == "pending"
        await dispatch(service, sessionmaker)
        await dispatch(service, sessionmaker)
        assert (await row(sessionmaker, lost.notification_id)).status == "sent"
        assert len(sink.to(str(taken.recipient.email))) == 1
        resent = sink.to(str(lost.recipient.email))
        assert len(resent) == 1
        assert resent[0]["Message-ID"] == message_id(lost.notification_id)
        assert [u["status"] for u in await reported(sessionmaker, taken.notification_id)] == ["sent"]
        await email.close()


async def test_the_mail_lookup_is_never_taken_for_an_answer_it_did_not_give(sms: SmsProvider, tmp_path: Path) -> None:
    with mail_sink(tmp_path / "mail") as sink:
        # No lookup URL: SMTP cannot be asked.
        blind = SmtpChannel(host="127.0.0.1", port=sink.smtp_port, sender="collections@arrears.test")
        msg = Message("N-1:overdue_7:email", "a@example.com", "Subject", "Text")
        with pytest.raises(OutcomeUnknown):
            await blind.lookup(msg, datetime.now(UTC))
        # An API that cannot answer is a transient failure (recovery asks again), not "not found".
        down = SmtpChannel(
            host="127.0.0.1", port=sink.smtp_port, sender="c@arrears.test", lookup_url=f"http://127.0.0.1:{free_port()}"
        )
        with pytest.raises(TransientSendError):
            await down.lookup(msg, datetime.now(UTC))
        await down.close()
        # An API that refuses the question (here a wrong path: 404) will not answer later either.
        wrong = SmtpChannel(
            host="127.0.0.1", port=sink.smtp_port, sender="c@arrears.test", lookup_url=f"{sink.api_url}/nowhere"
        )
        with pytest.raises(OutcomeUnknown):
            await wrong.lookup(msg, datetime.now(UTC))
        await wrong.close()
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{sink.api_url}/api/v1/search", params={"query": "subject:invoice"})
        assert response.status_code == 400
        asking = SmtpChannel(
            host="127.0.0.1", port=sink.smtp_port, sender="collections@arrears.test", lookup_url=sink.api_url
        )
        assert await asking.lookup(msg, datetime.now(UTC)) is None
        await asking.send(msg)
        found = await asking.lookup(msg, datetime.now(UTC))
        assert found is not None
        assert found.provider_message_id == message_id(msg.notification_id)
        # Another notification with a similar id is not this one.
        other = Message("N-1:overdue_7:email2", "a@example.com", "Subject", "Text")
        assert await asking.lookup(other, datetime.now(UTC)) is None
        async with httpx.AsyncClient() as client:
            quoted = await client.get(
                f"{sink.api_url}/api/v1/search", params={"query": f'message-id:"{message_id(msg.notification_id)}"'}
            )
        body = quoted.json()
        assert body["messages_count"] == 1
        assert body["messages"][0]["MessageID"] == message_id(msg.notification_id)[1:-1]
        assert body["messages"][0]["To"] == [{"Name": "", "Address": "a@example.com"}]
        await asking.close()


async def test_back_to_back_waves_share_one_connection_and_each_commits(
    service: DeliveryService,
    sessionmaker: async_sessionmaker[AsyncSession],
    checkouts: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests = [new_request("sms") for _ in range(6)]
    for req in requests:
        await submit(service, sessionmaker, req)
    async with sessionmaker() as session, session.begin():
        claimed = await service.claim(session, 10)
    assert {r.notification_id for r in claimed} == {r.notification_id for r in requests}
    checkouts.clear()  # counted from here
    gate = asyncio.Event()
    marking = asyncio.Event()
    # Waves of marks only: each is one statement (``commit_wave``) on the shared connection.
    commit_wave = service.repo.commit_wave

    async def slow_first_wave(connection: Any, mark_ids: list[str], *rest: Any) -> frozenset[str]:
        if not marking.is_set():
            marking.set()
            await gate.wait()
        return await commit_wave(connection, mark_ids, *rest)

    service.repo.commit_wave = slow_first_wave  # type: ignore[method-assign,assignment]
    waves = service._waves_for(sessionmaker)
    first = asyncio.ensure_future(waves.handover(requests[0].notification_id))
    await marking.wait()
    rest = asyncio.gather(*(waves.handover(r.notification_id) for r in requests[1:]))
    await asyncio.sleep(0)
    gate.set()
    assert await first
    assert list(await rest) == [True] * 5
    assert waves.transactions == 2  # the first alone, then the five that came meanwhile
    assert len(checkouts) == 1  # one check-out for both
    async with sessionmaker() as other:  # committed, as another connection sees it
        seen_by_others = list(
            (
                await other.execute(
                    select(notifications.c.status).where(
                        notifications.c.notification_id.in_([r.notification_id for r in requests])
                    )
                )
            ).scalars()
        )
    assert seen_by_others == ["sending"] * 6
    checkouts.clear()
    # The next run of waves, soon after, goes on the same connection.
    assert not await waves.handover("N-unknown")  # no such claimed row: refused, not an error
    assert checkouts == []

    # A wave that fails gives its connection back; the next wave checks out a fresh one.
    async def broken(*_: Any) -> frozenset[str]:
        raise RuntimeError("statement failed")

    service.repo.commit_wave = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await waves.handover("N-unknown")
    service.repo.commit_wave = commit_wave  # type: ignore[method-assign]
    assert not await waves.handover("N-unknown")
    assert len(checkouts) == 1
    # After a pause longer than HOLD_IDLE_SECONDS, too.
    monkeypatch.setattr(service_module, "HOLD_IDLE_SECONDS", 0.0)
    await asyncio.sleep(0.01)
    assert not await waves.handover("N-unknown")
    assert len(checkouts) == 2
    await service.release(sessionmaker)  # a dispatcher that stops gives it back
    assert waves._held is None


async def test_a_wave_of_marks_and_sent_outcomes_is_one_statement_all_or_nothing(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """``commit_wave``: marks, outcomes and their delivery events in one statement on the driver's
    connection, written as the transaction of ``mark_sending_many`` + ``record_outcomes`` would."""
    requests = [new_request("sms") for _ in range(6)]
    ids = [r.notification_id for r in requests]
    for req in requests:
        await submit(service, sessionmaker, req)
    async with sessionmaker() as session, session.begin():
        claimed = {r.notification_id: r for r in await service.claim(session, 1000)}
        now = service.clock.now()
        for nid in ids[2:5]:
            await service.repo.mark_sending(session, nid, now)
    async with sessionmaker() as session, session.begin():  # callbacks that overtook our record
        await service.on_status_callback(session, StatusCallback(ids[3], None, "failed", None))
        await service.on_status_callback(session, StatusCallback(ids[4], "SMcallback", "delivered", None))
    sent = [_Outcome(claimed[nid], "sent", None, f"SM{i}", None, False) for i, nid in enumerate(ids) if 2 <= i < 5]
    async with engine.connect() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        handed = await service.commit_wave(driver, [ids[0], ids[1], "N-unknown"], sent)
        assert handed == frozenset(ids[:2])
        assert not driver.is_in_transaction()  # committed: its own transaction

        # All or nothing: an outbox row that cannot be written leaves the marks and outcomes undone.
        with pytest.raises(asyncpg.NotNullViolationError):
            await service.repo.commit_wave(
                driver,
                [ids[5]],
                [(ids[2], "SMother")],
                [(None, "k", 0, b"{}")],  # type: ignore[list-item]
                "{}",
                service.clock.now(),
            )
        assert not driver.is_in_transaction()
    stored = {nid: await row(sessionmaker, nid) for nid in ids}
    assert [stored[nid].status for nid in ids] == ["sending", "sending", "sent", "failed", "delivered", "claimed"]
    assert stored[ids[0]].claimed_at is not None
    assert stored[ids[2]].provider_message_id == "SM2"
    assert stored[ids[2]].sent_at is not None and stored[ids[2]].reason is None
    # A callback's later word stays; only the provider id and send time are filled in where missing.
    assert stored[ids[3]].provider_message_id == "SM3"
    assert stored[ids[3]].reason == "provider reported failed"
    assert stored[ids[4]].provider_message_id == "SMcallback"
    for nid in ids[2:5]:
        assert "sent" in [u["status"] for u in await reported(sessionmaker, nid)]
    async with sessionmaker() as session:
        headers = (await session.execute(select(outbox.c.headers))).scalars().all()
    assert all(isinstance(h, dict) for h in headers)


async def test_the_claim_reads_suppressions_by_the_address_hash_python_computes(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The claim statement looks suppressions up by PostgreSQL's hash of the address; where that is
    not Python's (case mapping beyond ASCII), the list is asked again with Python's hash."""
    zone = daytime_zone()
    plain = new_request("email", recipient={"email": "Erika.Mustermann@Example.COM", "timezone": zone})
    exotic = new_request("email", recipient={"email": "İnci@example.com", "timezone": zone})
    texted = new_request("sms")
    free = new_request("email")
    suppressed = [plain, exotic, texted]
    async with sessionmaker() as session, session.begin():
        for req in suppressed:
            channel = req.channel
            address = str(req.recipient.email if channel == "email" else req.recipient.phone)
            await service.repo.suppress(
                session, channel, address_hash(channel, address), "unsubscribe link", service.clock.now()
            )
    for req in [*suppressed, free]:
        await submit(service, sessionmaker, req)
    asked: list[set[tuple[str, str]]] = []
    suppressed_among = service.repo.suppressed_among

    async def asking(session: AsyncSession, keys: Any) -> Any:
        asked.append(set(keys))
        return await suppressed_among(session, keys)

    service.repo.suppressed_among = asking  # type: ignore[method-assign]
    async with sessionmaker() as session, session.begin():
        claimed = await service.claim(session, 1000)
    assert [r.notification_id for r in claimed] == [free.notification_id]
    assert claimed[0].address_hash == address_hash("email", str(free.recipient.email))
    # Only the address PostgreSQL hashes otherwise was looked up again.
    assert asked == [{("email", address_hash("email", "İnci@example.com"))}]
    for req in suppressed:
        stored = await row(sessionmaker, req.notification_id)
        assert (stored.status, stored.reason, stored.attempts) == ("suppressed", "recipient opted out or bounced", 0)


async def test_claims_share_one_held_connection_until_one_fails(
    service: DeliveryService, sessionmaker: async_sessionmaker[AsyncSession], checkouts: list[object]
) -> None:
    dispatcher = Dispatcher(service, sessionmaker, concurrency=4, poll_seconds=0.05)
    checkouts.clear()  # counted from here
    for _ in range(3):
        async with dispatcher._claim_session() as session, session.begin():
            await service.claim(session, 10)
    assert len(checkouts) == 1
    with pytest.raises(RuntimeError):
        async with dispatcher._claim_session() as session, session.begin():
            raise RuntimeError("claim failed")
    async with dispatcher._claim_session() as session, session.begin():
        await service.claim(session, 10)
    assert len(checkouts) == 2  # a fresh connection after the failure
    requests = [new_request("sms") for _ in range(10)]
    for req in requests:
        await submit(service, sessionmaker, req)
    await dispatcher.run(until_idle=True)
    for req in requests:
        assert (await row(sessionmaker, req.notification_id)).status == "sent"
    assert dispatcher._claims is None  # given back when the run ends


@pytest.mark.parametrize("reason", [None, "provider reported failed (error 30006)", "zugestellt – später"])
async def test_a_wave_writes_the_delivery_event_new_event_would(service: DeliveryService, reason: str | None) -> None:
    req = new_request("sms")
    notification = type(
        "Notification",
        (),
        {
            "notification_id": req.notification_id,
            "case_id": req.case_id,
            "account_id": req.account_id,
            "channel": "sms",
        },
    )()
    now = service.clock.now()
    written = orjson.loads(service._event_json(notification, now, "sent", reason, "SM1"))
    expected = orjson.loads(service._event(notification, now, "sent", reason, "SM1").to_json())
    assert written.pop("id") != expected.pop("id")
    assert list(written) == list(expected)
    assert written == expected
