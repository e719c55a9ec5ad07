"""Webhooks (port 8004): SMS status callbacks, inbound SMS and unsubscribe links.

Twilio's callbacks are form posts signed with X-Twilio-Signature over the public URL (as the
provider saw it, from ARREARS_NOTIFIER_PUBLIC_URL) and the sorted form fields; unsigned or
wrongly signed posts get 403. Repeated and out-of-order callbacks are answered 200 and change
nothing. The unsubscribe link shows a confirmation page on GET (mail scanners follow links) and
unsubscribes on POST, which is also the RFC 8058 one-click target of List-Unsubscribe-Post.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from arrears_notifier.deliveries.service import StatusCallback
from arrears_notifier.deps import DeliveryServiceDep, SessionDep, SettingsDep
from arrears_notifier.settings import NotifierSettings
from arrears_notifier.webhooks.signature import valid_signature
from arrears_shared.http import Problem

router = APIRouter(prefix="/v1", tags=["webhooks"])
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


async def _signed_form(request: Request, settings: NotifierSettings) -> dict[str, str]:
    form = await request.form()
    params = [(k, str(v)) for k, v in form.multi_items()]
    url = settings.public_base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not valid_signature(settings.sms_auth_token, url, params, request.headers.get("x-twilio-signature")):
        raise Problem(403, "Forbidden", "missing or invalid X-Twilio-Signature", type="signature")
    return dict(params)


@router.post("/webhooks/sms/status")
async def sms_status(
    request: Request,
    session: SessionDep,
    service: DeliveryServiceDep,
    settings: SettingsDep,
    nid: str = Query(description="The notification id the callback URL was issued for."),
) -> dict[str, Any]:
    form = await _signed_form(request, settings)
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not status:
        raise Problem(422, "Unprocessable Content", "MessageStatus is required", type="validation")
    callback = StatusCallback(
        notification_id=nid,
        message_sid=form.get("MessageSid") or form.get("SmsSid"),
        status=status.lower(),
        error_code=form.get("ErrorCode") or None,
    )
    outcome = await service.on_status_callback(session, callback)
    return {"notification_id": nid, "outcome": outcome}


@router.post("/webhooks/sms/inbound")
async def sms_inbound(
    request: Request, session: SessionDep, service: DeliveryServiceDep, settings: SettingsDep
) -> Response:
    form = await _signed_form(request, settings)
    sender = form.get("From", "")
    if not sender:
        raise Problem(422, "Unprocessable Content", "From is required", type="validation")
    await service.on_inbound_sms(session, sender, form.get("Body", ""))
    # The provider itself answers STOP/START with its compliance reply; we add none.
    return Response(EMPTY_TWIML, media_type="application/xml")


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{escape(title)}</title></head>'
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


@router.get("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_page(service: DeliveryServiceDep, token: str = Query(max_length=512)) -> HTMLResponse:
    if service.signer.verify(token) is None:
        raise Problem(400, "Bad Request", "this unsubscribe link is not valid", type="unsubscribe-link")
    form = (
        f'<form method="post" action="?token={escape(token)}"><p>Stop receiving payment reminders at this address?</p>'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_page("Unsubscribe", form))


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(
    session: SessionDep, service: DeliveryServiceDep, token: str = Query(max_length=512)
) -> HTMLResponse:
    try:
        await service.unsubscribe(session, token)
    except ValueError as exc:
        raise Problem(400, "Bad Request", str(exc), type="unsubscribe-link") from None
    return HTMLResponse(_page("Unsubscribed", "<p>You will not receive further payment reminders here.</p>"))
