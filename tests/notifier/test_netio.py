"""The httpcore network backend on asyncio that the SMS channel's httpx transports use: keep-alive,
a connection the server closed while idle, timeouts, refused connections, flow control both ways
and TLS, through httpx as the channel uses it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpcore
import httpx
import pytest

from arrears_dev.stack import free_port
from arrears_notifier.channels.base import AmbiguousSendError, Message, TransientSendError
from arrears_notifier.channels.netio import _COALESCE, AsyncioBackend, AsyncioStream, _Protocol, use_asyncio_backend
from arrears_notifier.channels.sms import TwilioSmsChannel

Handler = Callable[[bytes, bytes], Awaitable[bytes | None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def _response(body: bytes, close: bool = False) -> bytes:
    headers = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    if close:
        headers += "Connection: close\r\n"
    return headers.encode() + b"\r\n" + body


@asynccontextmanager
async def http_server(
    handler: Handler, *, close_after: int | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[int]]]:
    """A minimal HTTP/1.1 server; ``handler(head, body)`` gives the response bytes (None: never
    answer). Closes each connection after ``close_after`` responses. Yields the port and a list
    with the number of connections accepted."""
    connections = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        served = 0
        try:
            while (request := await _read_request(reader)) is not None:
                answer = await handler(*request)
                if answer is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
                served += 1
                if close_after is not None and served >= close_after:
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, connections
    finally:
        server.close()


def client(**kwargs: object) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(**kwargs)  # type: ignore[arg-type]
    assert use_asyncio_backend(transport)
    return httpx.AsyncClient(transport=transport)


async def echo(head: bytes, body: bytes) -> bytes:
    return _response(head.split(b" ", 2)[1] + b" " + str(len(body)).encode())


async def test_the_sms_channel_sends_over_the_asyncio_backend() -> None:
    channel = TwilioSmsChannel(api_base="http://127.0.0.1:9", account_sid="AC1", auth_token="t", sender="+1500")
    try:
        for transport in channel._transports:
            assert isinstance(transport._pool._network_backend, AsyncioBackend)
    finally:
        await channel.close()


async def test_keep_alive_reuses_one_connection() -> None:
    async with http_server(echo) as (port, connections), client() as http:
        for i in range(5):
            response = await http.post(f"http://127.0.0.1:{port}/x{i}", content=b"abc")
            assert response.status_code == 200
            assert response.text == f"/x{i} 3"
    assert connections == [1]


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async with http_server(echo, close_after=1) as (port, connections), client() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/a")).text == "/a 0"
        await asyncio.sleep(0.05)  # the server's close reaches the idle connection
        assert (await http.get(f"http://127.0.0.1:{port}/b")).text == "/b 0"
    assert connections == [2]


async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def silent(head: bytes, body: bytes) -> bytes | None:
        return None

    async with http_server(silent) as (port, _), client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"http://127.0.0.1:{port}/", content=b"x", timeout=0.2)


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/")


async def test_large_bodies_both_ways() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB: past the read buffer's high-water mark and the socket buffers

    async def mirror(head: bytes, body: bytes) -> bytes:
        return _response(body)

    async with http_server(mirror) as (port, _), client() as http:
        response = await http.post(f"http://127.0.0.1:{port}/", content=big)
        assert response.content == big


async def test_the_channel_classifies_backend_failures() -> None:
    async def silent(head: bytes, body: bytes) -> bytes | None:
        return None

    message = Message("n-1:sms", "+15005550006", None, "hello", None, ())
    refused = TwilioSmsChannel(
        api_base=f"http://127.0.0.1:{free_port()}", account_sid="AC1", auth_token="t", sender="+1500"
    )
    try:
        with pytest.raises(TransientSendError):  # never reached the provider: safe to retry
            await refused.send(message)
    finally:
        await refused.close()
    async with http_server(silent) as (port, _):
        hanging = TwilioSmsChannel(
            api_base=f"http://127.0.0.1:{port}", account_sid="AC1", auth_token="t", sender="+1500", timeout=0.2
        )
        try:
            with pytest.raises(AmbiguousSendError):  # went out, no answer: never retried blindly
                await hanging.send(message)
        finally:
            await hanging.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: (key, certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_tls(certificate: tuple[Path, Path]) -> None:
    key, cert = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with http_server(echo, tls=server_tls) as (port, connections), client(verify=trusted) as http:
        for path in ("/a", "/b"):
            response = await http.post(f"https://localhost:{port}{path}", content=b"secret")
            assert response.text == f"{path} 6"
            assert response.extensions["network_stream"].get_extra_info("ssl_object") is not None
    assert connections == [1]
    untrusted = ssl.create_default_context()
    async with http_server(echo, tls=server_tls) as (port, _), client(verify=untrusted) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"https://localhost:{port}/")


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_a_request_head_and_body_leave_in_one_write() -> None:
    transport = RecordingTransport()
    protocol = _Protocol(asyncio.get_running_loop())
    protocol.connection_made(transport)
    stream = AsyncioStream(transport, protocol)
    await stream.write(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
    await stream.write(b"body")
    assert transport.writes == []  # held until the answer is read
    protocol.data_received(b"HTTP/1.1 201 Created\r\n")
    assert await stream.read(65536) == b"HTTP/1.1 201 Created\r\n"
    assert transport.writes == [b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"]
    # Without a read, the next turn of the loop sends what is held.
    await stream.write(b"more")
    await asyncio.sleep(0)
    assert transport.writes[-1] == b"more"
    # Past the coalescing size, a write goes out at once; closing sends what is held first.
    big = b"x" * (_COALESCE + 1)
    await stream.write(big)
    assert transport.writes[-1] == big
    await stream.write(b"last")
    await stream.aclose()
    assert transport.writes[-1] == b"last"
    assert transport.closed
    with pytest.raises(httpcore.WriteError):
        await stream.write(b"after close")
