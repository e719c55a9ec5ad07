"""Email over SMTP (STARTTLS and auth when configured; one connection reused between messages)."""

from __future__ import annotations

import asyncio
import contextlib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from arrears_notifier.channels.base import (
    Channel,
    Message,
    PermanentSendError,
    SendResult,
    TransientSendError,
)


class SmtpChannel(Channel):
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password, self.timeout = starttls, username, password, timeout
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=self.starttls, use_tls=False
        )
        await client.connect()
        if self.username and self.password:
            await client.login(self.username, self.password)
        self._client = client
        return client

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = formatdate(usegmt=True)
        # A stable Message-ID per notification lets a provider or a mailbox recognise a resend.
        mail["Message-ID"] = make_msgid(idstring=message.notification_id.replace(":", "."), domain="arrears.local")
        mail["X-Arrears-Notification-Id"] = message.notification_id
        for name, value in message.headers:
            mail[name] = value
        mail.set_content(message.text)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: Message) -> SendResult:
        mail = self.build(message)
        async with self._lock:
            try:
                client = await self._connected()
                await client.send_message(mail)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                codes = [r.code for r in exc.recipients]
                if all(500 <= c < 600 for c in codes):
                    raise PermanentSendError(f"recipient refused ({codes[0]})", hard_bounce=True) from None
                raise TransientSendError(f"recipient deferred ({codes[0] if codes else '?'})") from None
            except aiosmtplib.SMTPResponseException as exc:
                self._client = None
                if 500 <= exc.code < 600:
                    raise PermanentSendError(f"SMTP {exc.code}") from None
                raise TransientSendError(f"SMTP {exc.code}") from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                self._client = None
                raise TransientSendError(f"SMTP connection: {type(exc).__name__}") from None
        return SendResult(provider_message_id=str(mail["Message-ID"]))

    async def close(self) -> None:
        if self._client is not None and self._client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await self._client.quit()
        self._client = None
