"""Email over SMTP (STARTTLS and auth when configured; a small pool of connections reused between messages).

Each send runs MAIL, RCPT and DATA itself so that a failure can be placed: anything refused or
broken before DATA means the relay has not taken the message (retry is safe); a reply code to DATA
is the relay's verdict; a timeout or a dropped connection during DATA is ambiguous (the relay may
have queued it) and is never retried blindly. The notification is committed as ``sending`` (the
``handover`` callback) only after MAIL and RCPT were accepted, right before DATA, so the window
in which a crash leaves an email's outcome unknown is the DATA exchange alone.
"""

from __future__ import annotations

import contextlib
import email.policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from arrears_notifier.channels.base import (
    AmbiguousSendError,
    Channel,
    Handover,
    HandoverRefused,
    Message,
    PermanentSendError,
    SendResult,
    TransientSendError,
)

_NETWORK = (aiosmtplib.SMTPException, OSError, TimeoutError)


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
        pool_size: int = 4,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password, self.timeout = starttls, username, password, timeout
        self.concurrency = pool_size
        self._idle: list[aiosmtplib.SMTP] = []

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=self.starttls, use_tls=False
        )
        await client.connect()
        if self.username and self.password:
            await client.login(self.username, self.password)
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

    async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
        mail = self.build(message)
        data = mail.as_bytes(policy=email.policy.SMTP)
        client = self._idle.pop() if self._idle else None
        try:
            if client is None or not client.is_connected:
                client = await self._connect()
            await client.mail(self.sender)
            await client.rcpt(message.to)
        except aiosmtplib.SMTPRecipientRefused as exc:
            self._discard(client)
            if 500 <= exc.code < 600:
                raise PermanentSendError(f"recipient refused ({exc.code})", hard_bounce=True) from None
            raise TransientSendError(f"recipient deferred ({exc.code})") from None
        except aiosmtplib.SMTPResponseException as exc:
            self._discard(client)
            if 500 <= exc.code < 600:
                raise PermanentSendError(f"SMTP {exc.code}") from None
            raise TransientSendError(f"SMTP {exc.code}") from None
        except _NETWORK as exc:
            self._discard(client)
            raise TransientSendError(f"SMTP connection: {type(exc).__name__}") from None
        if handover is not None and not await handover():
            with contextlib.suppress(*_NETWORK):
                await client.rset()
            self._idle.append(client)
            raise HandoverRefused(message.notification_id)
        try:
            await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            self._discard(client)
            if 500 <= exc.code < 600:
                raise PermanentSendError(f"SMTP {exc.code} to DATA") from None
            raise TransientSendError(f"SMTP {exc.code} to DATA") from None
        except _NETWORK as exc:
            self._discard(client)
            raise AmbiguousSendError(f"SMTP connection lost during DATA: {type(exc).__name__}") from None
        self._idle.append(client)
        return SendResult(provider_message_id=str(mail["Message-ID"]))

    def _discard(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None and client.is_connected:
            client.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            if client.is_connected:
                with contextlib.suppress(*_NETWORK):
                    await client.quit()
