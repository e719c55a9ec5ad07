"""A development SMTP server that stores every message it receives as an .eml file.

With ``--api-port`` it also answers a Mailpit-compatible search over what it stored:
``GET /api/v1/search?query=message-id:<id>`` (the id with or without angle brackets, optionally
in double quotes) answers ``{"total", "messages_count", "count", "start", "messages": [...]}``
with Mailpit's message summary fields (ID, MessageID, From, To, Subject, Created, Size). Only the
``message-id:`` filter is understood; any other query answers 400. A message is on disk and in
the index before the server replies 250 to DATA, so whatever the search does not find, the sink
never accepted. Like Mailpit, it keeps no idempotency of its own: what it is sent twice, it
stores twice.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import threading
import uuid
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# "<local@domain>" with dot-atoms on both sides, then the command's parameters.
_PLAIN_ANGLE_ADDRESS = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>(.*)", re.DOTALL)


class LeanSMTP(SMTP):
    """aiosmtpd's server, with the address of MAIL FROM and RCPT TO read by one regular expression
    when it is a plain ``<local@domain>``: aiosmtpd parses every address with the standard
    library's header parser and defines a class on every call (about a third of the sink's CPU
    per message). Anything else goes through aiosmtpd's own parsing."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        found = _PLAIN_ANGLE_ADDRESS.fullmatch(arg.lstrip())
        rest = found.group(2).lstrip() if found is not None else ""
        if found is None or rest.startswith("("):  # a comment after the address: aiosmtpd's parser
            return super()._getaddr(arg)
        address = found.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest


class LeanController(Controller):
    def factory(self) -> SMTP:
        return LeanSMTP(self.handler, **self.SMTP_kwargs)


_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def _message_id(data: bytes) -> str:
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    found = _MESSAGE_ID.search(head)
    if found is None:
        return ""
    return b"".join(found.group(1).split()).decode("ascii", "replace").strip("<>").lower()


class StoreHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._by_message_id: dict[str, list[str]] = {}
        for path in sorted(directory.glob("*.eml")):
            self._index(path.name, path.read_bytes())

    def _index(self, name: str, data: bytes) -> None:
        mid = _message_id(data)
        if mid:
            with self._lock:
                self._by_message_id.setdefault(mid, []).append(name)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else str(content).encode()
        name = f"{uuid.uuid4().hex}.eml"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.rename(self.directory / name)
        self._index(name, data)
        return "250 OK stored"

    def search_message_id(self, message_id: str) -> list[dict[str, Any]]:
        """Mailpit's message summaries of the stored messages with this Message-ID."""
        with self._lock:
            names = list(self._by_message_id.get(message_id.strip().strip("<>").lower(), ()))
        return [summary(self.directory / name) for name in names]


def summary(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    msg = BytesParser(policy=default_policy).parsebytes(data, headersonly=True)

    def addresses(header: str) -> list[dict[str, str]]:
        return [{"Name": n, "Address": a} for n, a in getaddresses([str(v) for v in msg.get_all(header, [])])]

    sender = addresses("From")
    return {
        "ID": path.stem,
        "MessageID": str(msg.get("Message-ID", "")).strip().strip("<>"),
        "Read": False,
        "From": sender[0] if sender else {"Name": "", "Address": ""},
        "To": addresses("To"),
        "Cc": addresses("Cc"),
        "Bcc": [],
        "ReplyTo": addresses("Reply-To"),
        "Subject": str(msg.get("Subject", "")),
        "Created": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat().replace("+00:00", "Z"),
        "Tags": [],
        "Size": len(data),
        "Attachments": 0,
        "Snippet": "",
    }


_QUERY = re.compile(r'^\s*message-id:\s*(?:"([^"]*)"|(\S+))\s*$', re.IGNORECASE)


def create_api(handler: StoreHandler) -> FastAPI:
    app = FastAPI(title="Arrears dev SMTP sink (Mailpit-compatible search)")

    @app.get("/api/v1/search")
    async def search(request: Request) -> JSONResponse:
        query = request.query_params.get("query", "")
        match = _QUERY.match(query)
        if match is None:
            return JSONResponse({"Error": "only message-id:<id> searches are supported"}, status_code=400)
        found = handler.search_message_id(match.group(1) or match.group(2) or "")
        return JSONResponse(
            {
                "total": len(found),
                "unread": len(found),
                "count": len(found),
                "messages_count": len(found),
                "messages_unread": len(found),
                "start": 0,
                "tags": [],
                "messages": found,
            }
        )

    return app


def read_messages(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(directory.glob("*.eml"))]


def main() -> None:
    parser = argparse.ArgumentParser(description="Development SMTP sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    parser.add_argument("--api-port", type=int, default=0, help="serve the Mailpit-compatible search here")
    args = parser.parse_args()
    handler = StoreHandler(args.dir)
    controller = LeanController(handler, hostname=args.host, port=args.port, decode_data=False)
    controller.start()
    try:
        if args.api_port:
            uvicorn.run(create_api(handler), host=args.host, port=args.api_port, log_level="warning")
            return
        stop = asyncio.Event()

        async def wait() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()

        asyncio.run(wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
