"""The dev sinks' fast paths: the SMS sink answers the Messages POST below FastAPI (same answers as
Twilio's API for the cases the notifier relies on), and the SMTP sink reads plain envelope
addresses itself (the same as aiosmtpd's own parser)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from aiosmtpd.smtp import SMTP

from arrears_dev.sms_sink import create_app, read_messages
from arrears_dev.smtp_sink import LeanController, LeanSMTP, StoreHandler
from arrears_dev.smtp_sink import read_messages as read_mail
from arrears_dev.stack import free_port

AUTH = {"Authorization": "Basic " + base64.b64encode(b"AC1:token").decode()}
URL = "http://sink/2010-04-01/Accounts/AC1/Messages.json"


def sink(tmp_path: Path) -> httpx.AsyncClient:
    app = create_app(tmp_path / "sms.jsonl", auth_token="token")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sink")


async def test_sms_sink_stores_and_answers_a_message(tmp_path: Path) -> None:
    async with sink(tmp_path) as http:
        response = await http.post(
            URL,
            headers=AUTH,
            data={"To": "+4916012345", "From": "+1500", "Body": "Grüße, 100 €", "StatusCallback": "http://n/cb?nid=1"},
        )
        assert response.status_code == 201
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        assert answer["sid"].startswith("SM") and len(answer["sid"]) == 34
        assert (answer["to"], answer["from"], answer["body"]) == ("+4916012345", "+1500", "Grüße, 100 €")
        assert answer["status_callback"] == "http://n/cb?nid=1"
        assert answer["account_sid"] == "AC1"
        assert read_messages(tmp_path / "sms.jsonl") == [answer]
        # The list (still FastAPI's route) finds it.
        listed = await http.get(URL, headers=AUTH, params={"To": "+4916012345"})
        assert listed.status_code == 200
        assert listed.json()["messages"] == [answer]
        assert (await http.get("/messages")).json() == [answer]


@pytest.mark.parametrize(
    ("headers", "form", "status", "code"),
    [
        ({}, {"To": "+491", "Body": "x"}, 401, 20003),
        (
            {"Authorization": "Basic " + base64.b64encode(b"AC1:wrong").decode()},
            {"To": "+491", "Body": "x"},
            401,
            20003,
        ),
        (AUTH, {"To": "0160", "Body": "x"}, 400, 21211),
        (AUTH, {"To": "+491", "Body": ""}, 400, 21602),
    ],
)
async def test_sms_sink_refuses_like_twilio(
    tmp_path: Path, headers: dict[str, str], form: dict[str, str], status: int, code: int
) -> None:
    async with sink(tmp_path) as http:
        response = await http.post(URL, headers=headers, data=form)
        assert response.status_code == status
        assert response.json()["code"] == code
    assert read_messages(tmp_path / "sms.jsonl") == []


async def test_sms_sink_other_accounts_are_refused(tmp_path: Path) -> None:
    async with sink(tmp_path) as http:
        response = await http.post(
            "http://sink/2010-04-01/Accounts/AC2/Messages.json", headers=AUTH, data={"To": "+491", "Body": "x"}
        )
        assert response.status_code == 401
        assert json.loads(response.content)["code"] == 20003


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b.c>",
        " <bench-1@example.com> SIZE=123",
        "<a@b>   SIZE=1 ",
        "<a@b>\tBODY=8BITMIME SMTPUTF8",
        "<a@b>(comment) X",
        "<a..b@c>",
        "a@b",
        "<>",
        "",
        '<"x y"@b>',
        "<@route:a@b>",
        "<x!#$%&'*+/=?^_`{|}~-@example.com>",
    ],
)
def test_smtp_sink_reads_addresses_as_aiosmtpd_does(arg: str) -> None:
    class Handler:
        pass

    assert LeanSMTP(Handler())._getaddr(arg) == SMTP(Handler())._getaddr(arg)


async def test_smtp_sink_stores_what_it_is_sent(tmp_path: Path) -> None:
    port = free_port()
    controller = LeanController(StoreHandler(tmp_path), hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        await client.sendmail("from@example.com", ["to@example.com"], b"Message-ID: <m1@x>\r\n\r\nhello\r\n")
        await client.quit()
    finally:
        controller.stop()
    (stored,) = read_mail(tmp_path)
    assert b"hello" in stored
