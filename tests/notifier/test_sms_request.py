"""The SMS channel's prepared request: the same form, headers and auth as httpx's own encoding."""

from __future__ import annotations

import base64
import urllib.parse
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arrears_notifier.channels.base import Message
from arrears_notifier.channels.sms import TwilioSmsChannel, quote_plus


@pytest.mark.parametrize("callback", [None, "https://notifier.example/v1/webhooks/sms/status"])
async def test_request_matches_what_httpx_data_would_send(callback: str | None) -> None:
    channel = TwilioSmsChannel(
        api_base="http://sms.example/",
        account_sid="AC123",
        auth_token="s3cret&=+",
        sender="+15005550006",
        status_callback=callback,
    )
    try:
        text = "Grüße & 100% due: €1,234.50 +tax? Reply STOP to opt out."
        message = Message("n-1:sms", "+49 160 000&1", None, text, None, ())
        request = channel.request(message)
        reference = httpx.Client(auth=("AC123", "s3cret&=+")).build_request(
            "POST",
            channel.url,
            data={"To": message.to, "From": "+15005550006", "Body": text}
            | ({"StatusCallback": f"{callback}?nid=n-1%3Asms"} if callback else {}),
        )
        assert request.method == "POST"
        assert request.url == httpx.URL("http://sms.example/2010-04-01/Accounts/AC123/Messages.json")
        assert request.content == reference.content
        form = parse_qs(request.content.decode(), strict_parsing=True)
        assert form["Body"] == [text]
        assert form["To"] == ["+49 160 000&1"]
        if callback:
            assert form["StatusCallback"] == [f"{callback}?nid=n-1%3Asms"]
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.headers["content-length"] == str(len(request.content))
        assert request.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:s3cret&=+").decode()
        assert request.headers["host"] == "sms.example"
    finally:
        await channel.close()


@given(value=st.text(max_size=200))
def test_form_quoting_matches_urllib(value: str) -> None:
    assert quote_plus(value) == urllib.parse.quote_plus(value)
