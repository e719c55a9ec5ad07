"""The notifier's HTTP edge in process (ASGI) against the real database: signed SMS webhooks,
inbound STOP, the unsubscribe link, and the template list and preview."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from arrears_notifier.app import create_app
from arrears_notifier.deliveries.service import DeliveryService, address_hash
from arrears_notifier.models import inbox, notifications, outbox
from arrears_notifier.settings import NotifierSettings
from arrears_notifier.webhooks.signature import twilio_signature
from arrears_shared.runtime import Runtime

PUBLIC = "https://notifier.example.com"
TOKEN = "webhook-token"


@pytest.fixture(scope="module")
async def client(database_url: str, broker: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = NotifierSettings(
        database_url=database_url,
        kafka_bootstrap_servers=broker,
        ARREARS_NOTIFIER_PUBLIC_URL=PUBLIC,
        ARREARS_SMS_AUTH_TOKEN=TOKEN,
    )
    runtime = Runtime(service="notifier", settings=settings, outbox_table=outbox, inbox_table=inbox)
    app = create_app(settings, runtime)
    app.state.runtime = runtime  # the lifespan (consumers, dispatcher) is not started here
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as http:
        http.app = app  # type: ignore[attr-defined]
        yield http
    await runtime.engine.dispose()


def signed(path: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(TOKEN, PUBLIC + path, form.items())}


def service_of(client: httpx.AsyncClient) -> DeliveryService:
    svc: DeliveryService = client.app.state.delivery_service  # type: ignore[attr-defined]
    return svc


def test_signature_matches_twilios_documented_example() -> None:
    # The example from Twilio's webhook security documentation.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert twilio_signature("12345", url, params.items()) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


async def test_status_callback_needs_a_valid_signature_and_applies_once(client: httpx.AsyncClient) -> None:
    service = service_of(client)
    nid = f"N-{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    async with client.app.state.runtime.sessionmaker() as session, session.begin():  # type: ignore[attr-defined]
        await service.repo.record(
            session,
            {
                "notification_id": nid,
                "case_id": "CASE-1",
                "account_id": "ACC-HTTP",
                "channel": "sms",
                "template": "overdue_polite",
                "locale": "en",
                "recipient": {"phone": "+4915112345678", "timezone": "Europe/Berlin"},
                "variables": {},
                "status": "sent",
                "attempts": 1,
                "provider_message_id": "SM123",
                "sent_at": now,
                "created_at": now,
                "updated_at": now,
            },
        )
    path = f"/v1/webhooks/sms/status?nid={nid}"
    form = {"MessageSid": "SM123", "MessageStatus": "delivered", "AccountSid": "ACdev", "NewField": "x"}
    bad = await client.post(path, data=form, headers={"X-Twilio-Signature": "forged"})
    assert bad.status_code == 403
    assert bad.headers["content-type"].startswith("application/problem+json")
    unsigned = await client.post(path, data=form)
    assert unsigned.status_code == 403
    ok = await client.post(path, data=form, headers=signed(path, form))
    assert ok.status_code == 200, ok.text
    assert ok.json()["outcome"] == "delivered"
    again = await client.post(path, data=form, headers=signed(path, form))
    assert again.json()["outcome"] == "already known"
    older = {**form, "MessageStatus": "sent"}
    assert (await client.post(path, data=older, headers=signed(path, older))).json()["outcome"] == "already known"
    async with client.app.state.runtime.sessionmaker() as session:  # type: ignore[attr-defined]
        status = await session.scalar(select(notifications.c.status).where(notifications.c.notification_id == nid))
    assert status == "delivered"


async def test_inbound_stop_suppresses_the_number(client: httpx.AsyncClient) -> None:
    phone = f"+4917{uuid.uuid4().int % 10**9:09d}"
    path = "/v1/webhooks/sms/inbound"
    form = {"From": phone, "To": "+15005550006", "Body": "Stop", "MessageSid": "SMin"}
    r = await client.post(path, data=form, headers=signed(path, form))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    async with client.app.state.runtime.sessionmaker() as session:  # type: ignore[attr-defined]
        assert await service_of(client).repo.is_suppressed(session, "sms", address_hash("sms", phone))
    forged = await client.post(path, data={**form, "From": "+4915000000000"}, headers=signed(path, form))
    assert forged.status_code == 403


async def test_unsubscribe_link_confirms_on_get_and_unsubscribes_on_post(client: httpx.AsyncClient) -> None:
    hashed = address_hash("email", f"{uuid.uuid4().hex}@example.com")
    token = service_of(client).signer.sign("email", hashed)
    page = await client.get("/v1/unsubscribe", params={"token": token})
    assert page.status_code == 200
    assert "<form" in page.text
    async with client.app.state.runtime.sessionmaker() as session:  # type: ignore[attr-defined]
        assert not await service_of(client).repo.is_suppressed(session, "email", hashed)
    done = await client.post("/v1/unsubscribe", params={"token": token}, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    async with client.app.state.runtime.sessionmaker() as session:  # type: ignore[attr-defined]
        assert await service_of(client).repo.is_suppressed(session, "email", hashed)
    for bad in ("nonsense", token + "x", "Zm9v.0000"):
        r = await client.post("/v1/unsubscribe", params={"token": bad})
        assert r.status_code == 400
        assert r.json()["type"].endswith("unsubscribe-link")


async def test_template_list_and_preview(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/templates")).json()["items"]
    names = {t["name"] for t in listed}
    assert {"reminder_friendly", "overdue_firm", "notice_of_intent"} <= names
    for t in listed:
        assert t["channels"]["email"] == ["de", "en", "fr"]
        assert t["channels"]["sms"] == ["de", "en", "fr"]

    r = await client.post("/v1/templates/notice_of_intent/preview", json={"locale": "de", "channel": "email"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["subject"] == "Letzte Mahnung vor Übergabe"
    assert "1.284,50\xa0€" in body["text"]  # Babel, German: the amount and the deadline
    assert "förmliche Mitteilung" in body["text"]
    assert body["html"].startswith("<!DOCTYPE html>")

    r = await client.post(
        "/v1/templates/reminder_friendly/preview",
        json={"locale": "fr", "channel": "sms", "variables": {"total_due": "<b>99 €</b>"}},
    )
    sms = r.json()
    assert "STOP" in sms["text"]
    assert sms["sms"]["segments"] <= 2
    assert sms["html"] is None

    assert (await client.post("/v1/templates/nope/preview", json={})).status_code == 404
    r = await client.post("/v1/templates/overdue_firm/preview", json={"locale": "not a locale!"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "locale"
    r = await client.post("/v1/templates/overdue_firm/preview", json={"variables": {"invoices": 5}})
    assert r.status_code == 422
