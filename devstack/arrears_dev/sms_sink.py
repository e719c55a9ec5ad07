"""A development SMS provider that speaks the Twilio Messages API and stores what it is sent.

POST /2010-04-01/Accounts/{sid}/Messages.json (form-encoded, HTTP Basic) answers 201 with a
Twilio-shaped JSON body; GET on the same path lists messages like Twilio's Messages list (filters
To and DateSent>=, one page); GET /messages lists everything received (for tests and local runs).
It keeps no idempotency of its own: what it is sent twice, it stores twice.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import re
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


def create_app(store: Path, auth_token: str | None = None) -> FastAPI:
    app = FastAPI(title="Arrears dev SMS sink")
    store.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    # One append handle, flushed after every message (before the 201), instead of an open per message.
    out = store.open("ab")

    @functools.lru_cache(maxsize=64)
    def authorized_header(header: str, sid: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == sid and (auth_token is None or token == auth_token)

    def authorized(request: Request, sid: str) -> bool:
        return authorized_header(request.headers.get("authorization", ""), sid)

    @app.get("/2010-04-01/Accounts/{sid}/Messages.json")
    async def list_messages(sid: str, request: Request) -> JSONResponse:
        if not authorized(request, sid):
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401}, status_code=401)
        to = request.query_params.get("To")
        since = request.query_params.get("DateSent>")
        found = []
        for message in read_messages(store):
            if message["account_sid"] != sid or (to and message["to"] != to):
                continue
            if since and parsedate_to_datetime(message["date_created"]).date().isoformat() < since:
                continue
            found.append(message)
        return JSONResponse({"messages": found, "next_page_uri": None, "page": 0, "page_size": len(found)})

    def send(sid: str, authorization: str, raw: bytes) -> tuple[int, bytes]:
        """One message POSTed to the Messages resource: (status, JSON body)."""
        if not authorized_header(authorization, sid):
            return 401, orjson.dumps({"code": 20003, "message": "Authenticate", "status": 401})
        # Form-encoded (as Twilio's API takes it), parsed directly rather than through python-multipart.
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        to, body = form.get("To", ""), form.get("Body", "")
        if not to.startswith("+") or not to[1:].isdigit():
            return 400, orjson.dumps({"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})
        if not body:
            return 400, orjson.dumps({"code": 21602, "message": "Message body is required", "status": 400})
        now = format_datetime(datetime.now(UTC), usegmt=True)
        message: dict[str, Any] = {
            "sid": "SM" + secrets.token_hex(16),
            "account_sid": sid,
            "to": to,
            "from": form.get("From", ""),
            "body": body,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "error_code": None,
            "error_message": None,
            "price": None,
            "price_unit": "USD",
            "messaging_service_sid": None,
            "uri": f"/2010-04-01/Accounts/{sid}/Messages.json",
            "status_callback": form.get("StatusCallback"),
        }
        line = orjson.dumps(message)
        with lock:
            out.write(line + b"\n")
            out.flush()
        return 201, line

    # The POST is answered below FastAPI (an ASGI middleware): routing, the request object and
    # the response class cost more CPU per message than storing it.
    app.add_middleware(_MessagesPost, send=send)

    @app.get("/messages")
    async def messages() -> list[dict[str, Any]]:
        return read_messages(store)

    return app


_MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")


class _MessagesPost:
    """ASGI middleware answering ``POST /2010-04-01/Accounts/{sid}/Messages.json`` itself (with
    ``send(sid, authorization, body) -> (status, JSON)``); everything else goes to the app."""

    def __init__(self, app: ASGIApp, send: Callable[[str, str, bytes], tuple[int, bytes]]) -> None:
        self.app = app
        self.handle = send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _MESSAGES_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        chunks = []
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunks.append(event.get("body", b""))
            if not event.get("more_body", False):
                break
        status, body = self.handle(found.group(1), authorization, b"".join(chunks))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def read_messages(store: Path) -> list[dict[str, Any]]:
    if not store.exists():
        return []
    return [json.loads(line) for line in store.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description="Development SMS sink (Twilio-compatible)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--store", type=Path, default=Path("var/sms/messages.jsonl"))
    args = parser.parse_args()
    uvicorn.run(create_app(args.store), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
