"""Email over SMTP (STARTTLS and auth when configured; a small pool of connections reused between messages).

Each send runs MAIL, RCPT and DATA itself so that a failure can be placed: anything refused or
broken before DATA means the relay has not taken the message (retry is safe); a reply code to DATA
is the relay's verdict; a timeout or a dropped connection during DATA is ambiguous (the relay may
have queued it) and is never retried blindly. The notification is committed as ``sending`` (the
``handover`` callback) only after MAIL and RCPT were accepted, right before DATA, so the window
in which a crash leaves an email's outcome unknown is the DATA exchange alone.

Every message carries a Message-ID derived from its notification id alone (:func:`message_id`),
the same on every attempt. When ``lookup_url`` names a Mailpit-compatible search API
(``GET {lookup_url}/api/v1/search?query=message-id:<id>``, as Mailpit and the dev SMTP sink
serve), :meth:`SmtpChannel.lookup` asks it whether a message in that window arrived; without
it, SMTP cannot be asked and the outcome stays unknown.

The MIME bytes are generated directly (:func:`mime_bytes`) rather than through the standard
library's ``email`` package, whose header parsing and refolding cost about 2 ms per message:
CRLF line ends, RFC 2047 encoded words for non-ASCII unstructured headers, 7bit bodies when
they are ASCII with short lines and quoted-printable UTF-8 otherwise. Addresses that are not
ASCII (internationalised mailboxes) go through the standard library instead.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import email.policy
import hashlib
import re
import secrets
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib
import httpx
from aiosmtplib.email import quote_address
from aiosmtplib.typing import SMTPStatus

from arrears_notifier.channels.base import (
    AmbiguousSendError,
    Channel,
    Handover,
    HandoverRefused,
    Message,
    OutcomeUnknown,
    PermanentSendError,
    SendResult,
    TransientSendError,
)

_NETWORK = (aiosmtplib.SMTPException, OSError, TimeoutError)
MESSAGE_ID_DOMAIN = "arrears.local"
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]")
_CRLF = "\r\n"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# A plain addr-spec (dot-atom local part and domain): what aiosmtplib's address parsing (the
# standard library's parseaddr, about a tenth of the CPU per email) would return unchanged.
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*")


def envelope_address(address: str) -> bytes | None:
    """``<address>`` for SMTP MAIL FROM or RCPT TO when the address is a plain addr-spec (as
    aiosmtplib would quote it), else None (left to aiosmtplib)."""
    return f"<{address}>".encode("ascii") if _PLAIN_ADDRESS.fullmatch(address) else None


def message_id(notification_id: str) -> str:
    """``<…@arrears.local>``: readable, valid (RFC 5322 dot-atom) and one per notification id: the
    id with characters outside atext replaced, plus a hash of the exact id so that no two ids
    share one."""
    readable = ".".join(p for p in _NOT_ATEXT.sub(".", notification_id).split(".") if p)[:120].rstrip(".")
    digest = hashlib.sha256(notification_id.encode()).hexdigest()[:16]
    return f"<{readable}.{digest}@{MESSAGE_ID_DOMAIN}>" if readable else f"<{digest}@{MESSAGE_ID_DOMAIN}>"


def _unstructured(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break")
    if value.isascii() and len(name) + len(value) + 2 <= 998:
        return f"{name}: {value}"
    # RFC 2047 encoded words, folded at 76 characters.
    return f"{name}: {Header(value, 'utf-8', header_name=name).encode(linesep=_CRLF)}"


def _body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body with CRLF line ends)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # ends with a line break already (as the standard library, add one only if not)
    # Ending in CRLF also makes binascii use CRLF in its soft line breaks.
    joined = _CRLF.join(lines) + _CRLF
    if joined.isascii() and all(len(line) <= 998 for line in lines):
        return "7bit", joined.encode("ascii")
    return "quoted-printable", binascii.b2a_qp(joined.encode("utf-8"), istext=True)


def _part(text: str, subtype: str) -> tuple[list[str], bytes]:
    cte, body = _body(text)
    return [f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {cte}"], body


def mime_bytes(sender: str, message: Message, date: str | None = None) -> bytes | None:
    """The message as SMTP DATA bytes, or None when an address is not ASCII (left to the standard
    library). ``date`` is the Date header (now, if not given)."""
    if not (sender.isascii() and message.to.isascii()):
        return None
    for value in (sender, message.to):
        if "\r" in value or "\n" in value:
            raise ValueError("an address contains a line break")
    headers = [
        f"From: {sender}",
        f"To: {message.to}",
        _unstructured("Subject", message.subject or ""),
        f"Date: {date or formatdate(usegmt=True)}",
        f"Message-ID: {message_id(message.notification_id)}",
        _unstructured("X-Arrears-Notification-Id", message.notification_id),
    ]
    headers.extend(_unstructured(name, value) for name, value in message.headers)
    headers.append("MIME-Version: 1.0")
    if not message.html:
        part_headers, body = _part(message.text, "plain")
        head = _CRLF.join(headers + part_headers) + _CRLF + _CRLF
        return head.encode("ascii") + body
    parts = [_part(message.text, "plain"), _part(message.html, "html")]
    while True:
        # "=_" never occurs in quoted-printable output; a 7bit part is checked.
        boundary = f"=_arrears_{secrets.token_hex(12)}"
        if not any(boundary.encode() in body for _, body in parts):
            break
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    out = [(_CRLF.join(headers) + _CRLF + _CRLF).encode("ascii")]
    for part_headers, body in parts:
        out.append(f"--{boundary}{_CRLF}{_CRLF.join(part_headers)}{_CRLF}{_CRLF}".encode("ascii"))
        out.append(body + b"\r\n")  # that CRLF belongs to the boundary delimiter
    out.append(f"--{boundary}--{_CRLF}".encode("ascii"))
    return b"".join(out)


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
        lookup_url: str | None = None,
        lookup_timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password, self.timeout = starttls, username, password, timeout
        self.concurrency = pool_size
        self._idle: list[aiosmtplib.SMTP] = []
        # MAIL FROM's argument, quoted once as aiosmtplib would quote it on every message.
        self._mail_from = quote_address(sender).encode("ascii") if sender.isascii() else None
        self.lookup_url = lookup_url.rstrip("/") if lookup_url else None
        self.lookup_timeout = lookup_timeout
        self._lookup_client: httpx.AsyncClient | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=self.starttls, use_tls=False
        )
        await client.connect()
        if self.username and self.password:
            await client.login(self.username, self.password)
        return client

    def build(self, message: Message) -> EmailMessage:
        """The message through the standard library (for addresses that are not ASCII)."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = formatdate(usegmt=True)
        # The same Message-ID on every attempt lets a provider, a mailbox or our lookup recognise it.
        mail["Message-ID"] = message_id(message.notification_id)
        mail["X-Arrears-Notification-Id"] = message.notification_id
        for name, value in message.headers:
            mail[name] = value
        mail.set_content(message.text)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def data(self, message: Message) -> bytes:
        """The bytes sent as SMTP DATA."""
        data = mime_bytes(self.sender, message)
        if data is None:
            data = self.build(message).as_bytes(policy=email.policy.SMTP)
        return data

    async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
        data = self.data(message)
        client = self._idle.pop() if self._idle else None
        try:
            if client is None or not client.is_connected:
                client = await self._connect()
            async with asyncio.timeout(self.timeout):
                await self._envelope(client, message.to)
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
            # One deadline for the exchange (asyncio.timeout) rather than aiosmtplib's per reply
            # (asyncio.wait_for, twice per DATA and once per command).
            async with asyncio.timeout(self.timeout):
                await client.data(data, timeout=None)
        except aiosmtplib.SMTPResponseException as exc:
            self._discard(client)
            if 500 <= exc.code < 600:
                raise PermanentSendError(f"SMTP {exc.code} to DATA") from None
            raise TransientSendError(f"SMTP {exc.code} to DATA") from None
        except _NETWORK as exc:
            self._discard(client)
            raise AmbiguousSendError(f"SMTP connection lost during DATA: {type(exc).__name__}") from None
        self._idle.append(client)
        return SendResult(provider_message_id=message_id(message.notification_id))

    async def _envelope(self, client: aiosmtplib.SMTP, to: str) -> None:
        """MAIL FROM and RCPT TO, raising what aiosmtplib's ``mail`` and ``rcpt`` raise. Plain
        addresses on a connection past EHLO go straight to ``execute_command``, without a
        deadline of their own (the caller's ``asyncio.timeout`` bounds both)."""
        rcpt_to = envelope_address(to)
        if self._mail_from is None or rcpt_to is None or client.is_ehlo_or_helo_needed:
            await client.mail(self.sender)
            await client.rcpt(to)
            return
        response = await client.execute_command(b"MAIL", b"FROM:" + self._mail_from, timeout=None)
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, self.sender)
        response = await client.execute_command(b"RCPT", b"TO:" + rcpt_to, timeout=None)
        if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, to)

    async def lookup(self, message: Message, since: datetime) -> SendResult | None:
        """Did the relay take ``message``? Searches the Mailpit-compatible API at ``lookup_url`` for
        its Message-ID (unique per notification, so ``since`` is not needed). Raises
        :class:`OutcomeUnknown` without a ``lookup_url`` or when the API refuses the question (4xx
        other than 429, an answer that is not a search result), and TransientSendError when it
        cannot answer now (unreachable, 429, 5xx: recovery asks again on its next sweep). The API
        must keep every message at least as long as recovery takes to ask (docs/notifier.md)."""
        if self.lookup_url is None:
            raise OutcomeUnknown("the SMTP relay cannot be asked what it accepted (no lookup URL)")
        if self._lookup_client is None:
            self._lookup_client = httpx.AsyncClient(timeout=self.lookup_timeout)
        wanted = message_id(message.notification_id)
        try:
            response = await self._lookup_client.get(
                f"{self.lookup_url}/api/v1/search", params={"query": f"message-id:{wanted[1:-1]}", "limit": "50"}
            )
        except httpx.HTTPError as exc:
            raise TransientSendError(f"mail lookup unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientSendError(f"mail lookup {status}")
        if status != 200:  # a wrong URL (404), credentials (401/403), a query it refuses: asking again will not help
            raise OutcomeUnknown(f"mail lookup answered {status}")
        try:
            body = response.json()
        except ValueError:
            body = None
        found = (body.get("messages") or []) if isinstance(body, dict) else None
        if not isinstance(found, list):
            raise OutcomeUnknown("mail lookup answered something that is not a search result")
        for item in found:
            if str(item.get("MessageID", "")).strip().strip("<>") == wanted[1:-1]:
                return SendResult(provider_message_id=wanted)
        return None

    def _discard(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None and client.is_connected:
            client.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            if client.is_connected:
                with contextlib.suppress(*_NETWORK):
                    await client.quit()
        if self._lookup_client is not None:
            await self._lookup_client.aclose()
            self._lookup_client = None
