"""Local providers the notifier tests talk to: a real SMTP server (aiosmtpd) and the Twilio-compatible
HTTP SMS sink served by uvicorn on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session

from arrears_dev.sms_sink import create_app as create_sms_app
from arrears_dev.sms_sink import read_messages
from arrears_dev.smtp_sink import LeanController, StoreHandler, create_api
from arrears_dev.stack import free_port, wait_for_port


@dataclass
class RecordingHandler:
    """Stores every message; refuses recipients listed in ``refuse`` with the given SMTP reply."""

    messages: list[EmailMessage] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: Any = envelope.original_content or envelope.content or b""
        msg = message_from_bytes(raw if isinstance(raw, bytes) else str(raw).encode(), policy=default_policy)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 OK stored"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@contextmanager
def smtp_server() -> Iterator[tuple[int, RecordingHandler]]:
    handler = RecordingHandler()
    port = free_port()
    controller = LeanController(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


@dataclass
class MailSink:
    """The dev SMTP sink (.eml files) with its Mailpit-compatible search API."""

    smtp_port: int
    api_url: str
    directory: Path

    def messages(self) -> list[EmailMessage]:
        out = []
        for path in sorted(self.directory.glob("*.eml")):
            msg = message_from_bytes(path.read_bytes(), policy=default_policy)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages() if m["To"] == address]


@contextmanager
def mail_sink(directory: Path) -> Iterator[MailSink]:
    handler = StoreHandler(directory)
    port, api_port = free_port(), free_port()
    controller = LeanController(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    server = uvicorn.Server(uvicorn.Config(create_api(handler), host="127.0.0.1", port=api_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(api_port, 30)
    while not server.started:
        time.sleep(0.01)
    try:
        yield MailSink(port, f"http://127.0.0.1:{api_port}", directory)
    finally:
        server.should_exit = True
        thread.join(10)
        controller.stop()


@dataclass
class SmsProvider:
    base_url: str
    store: Path

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        return [m for m in read_messages(self.store) if to is None or m["to"] == to]


@contextmanager
def sms_provider(store: Path, auth_token: str | None = None) -> Iterator[SmsProvider]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_sms_app(store, auth_token), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, 30)
    while not server.started:
        time.sleep(0.01)
    try:
        yield SmsProvider(f"http://127.0.0.1:{port}", store)
    finally:
        server.should_exit = True
        thread.join(10)
