"""SMS over a Twilio-compatible HTTP API (form POST to /2010-04-01/Accounts/{Sid}/Messages.json).

The connections are ``max_connections`` httpx transports of one keep-alive connection each,
handed out from an idle list, rather than one client with a pool of ``max_connections``:
httpcore's pool looks at every one of its connections (a socket readability check each) on every
request, which cost about a fifth of the notifier's CPU per SMS at 16 connections.

A send builds its ``httpx.Request`` directly from parts prepared once (the parsed URL, the
Authorization and other headers, the timeout), encodes the form itself and hands the request to
its transport (``handle_async_request``, httpx's transport API), rather than going through an
``AsyncClient``, which on every request merges its defaults, parses the URL, runs the Basic-auth
and redirect flows and extracts cookies through ``http.cookiejar``. The transports use the proxy
that the environment names for the provider's URL (``HTTPS_PROXY`` and ``NO_PROXY``), as a client
would. Their sockets are asyncio's own (:mod:`arrears_notifier.channels.netio`, an httpcore
network backend) rather than anyio streams. Lookups (recovery only) use an ordinary client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode
from urllib.request import getproxies, proxy_bypass

import httpx

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
from arrears_notifier.channels.netio import AsyncioBackend, use_asyncio_backend

# application/x-www-form-urlencoded as urllib's quote_plus does it (what httpx's ``data=`` uses),
# one str.translate over the UTF-8 bytes instead of a Python loop over them.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_FORM_QUOTE = {b: chr(b) if b in _UNRESERVED else "+" if b == 0x20 else f"%{b:02X}" for b in range(256)}


def quote_plus(value: str) -> str:
    return value.encode().decode("latin-1").translate(_FORM_QUOTE)


# Twilio error codes that mean the number must never be messaged again.
_UNSUBSCRIBED = {21610}
_INVALID_NUMBER = {21211, 21614}


class TwilioSmsChannel(Channel):
    name = "sms"

    def __init__(
        self,
        *,
        api_base: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        status_callback: str | None = None,
        timeout: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.concurrency = max_connections
        self.url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.sender = sender
        self.status_callback = status_callback
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._url = httpx.URL(self.url)
        self._headers = httpx.Headers(
            {
                "Accept": "application/json",
                "Authorization": f"Basic {credentials}",
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": f"python-httpx/{httpx.__version__}",
            }
        )
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        # The form's fixed part, encoded once: From, then To, Body and StatusCallback per message.
        self._from = f"From={quote_plus(sender)}"
        # One TLS context for every client (each would otherwise load the CA bundle itself).
        tls = httpx.create_ssl_context()
        proxies = getproxies()
        proxy = None if proxy_bypass(self._url.host) else (proxies.get(self._url.scheme) or proxies.get("all"))
        self._transports = [
            httpx.AsyncHTTPTransport(
                verify=tls, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), proxy=proxy
            )
            for _ in range(max_connections)
        ]
        self._idle: asyncio.Queue[httpx.AsyncHTTPTransport] = asyncio.Queue()
        backend = AsyncioBackend()
        for transport in self._transports:
            # Sockets straight on asyncio rather than through anyio (channels/netio.py).
            use_asyncio_backend(transport, backend)
            self._idle.put_nowait(transport)
        # For lookups (rare: recovery only), so that they never wait for a send's connection.
        self.client = httpx.AsyncClient(
            auth=(account_sid, auth_token), verify=tls, timeout=timeout, limits=httpx.Limits(max_connections=2)
        )

    def request(self, message: Message) -> httpx.Request:
        """The POST that sends ``message`` (an ``application/x-www-form-urlencoded`` form, as
        ``httpx``'s ``data=`` would encode it)."""
        form = f"To={quote_plus(message.to)}&{self._from}&Body={quote_plus(message.text)}"
        if self.status_callback:
            # The notification id rides in the callback URL (covered by X-Twilio-Signature), so a
            # callback that overtakes our own record of the send still finds its notification.
            callback = f"{self.status_callback}?{urlencode({'nid': message.notification_id})}"
            form += f"&StatusCallback={quote_plus(callback)}"
        return httpx.Request(
            "POST", self._url, headers=self._headers, content=form.encode(), extensions=self._extensions
        )

    async def send(self, message: Message, handover: Handover | None = None) -> SendResult:
        request = self.request(message)
        if handover is not None and not await handover():
            raise HandoverRefused(message.notification_id)
        transport = await self._idle.get()
        try:
            response = await transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
            response.request = request
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientSendError(f"SMS provider unreachable: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:  # the request went out; the answer did not come back
            raise AmbiguousSendError(f"SMS provider did not answer: {type(exc).__name__}") from None
        finally:
            self._idle.put_nowait(transport)
        if response.status_code in (200, 201):
            return SendResult(provider_message_id=str(response.json().get("sid")))
        code = None
        with contextlib.suppress(ValueError):
            code = response.json().get("code")
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSendError(f"SMS provider {response.status_code}")
        raise PermanentSendError(
            f"SMS provider {response.status_code} code {code}",
            hard_bounce=code in _UNSUBSCRIBED or code in _INVALID_NUMBER,
        )

    async def lookup(self, message: Message, since: datetime) -> SendResult | None:
        """Did the provider take ``message``? Lists messages to the number sent since ``since``
        (Twilio's Messages list, filtered by To and DateSent) and matches the body exactly."""
        params = {"To": message.to, "DateSent>": since.date().isoformat(), "PageSize": "1000"}
        url: str | None = self.url
        while url:
            try:
                response = await self.client.get(url, params=params)
            except httpx.HTTPError as exc:
                raise TransientSendError(f"SMS provider unreachable: {type(exc).__name__}") from None
            if response.status_code != 200:
                raise TransientSendError(f"SMS provider {response.status_code} listing messages")
            page = response.json()
            for item in page.get("messages", []):
                created = item.get("date_created")
                when = parsedate_to_datetime(created) if created else None
                if item.get("body") == message.text and (when is None or when >= since.replace(microsecond=0)):
                    return SendResult(provider_message_id=str(item.get("sid")))
            next_uri = page.get("next_page_uri")
            url = f"{self.api_base}{next_uri}" if next_uri else None
            params = {}
        return None

    async def close(self) -> None:
        for transport in self._transports:
            await transport.aclose()
        await self.client.aclose()
