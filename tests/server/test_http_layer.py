"""The daemon's HTTP layer sends each reply with one write, on a real uvicorn server and socket."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from conftest import free_port

from runhouse.server.http import CoalescingHttpToolsProtocol, CoalescingTransport


class _Recording(asyncio.Transport):
    """A transport over a real socket that remembers each write it was asked to do."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))
        self.inner.write(data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def close(self) -> None:
        self.inner.close()


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for word in (b"one", b"two"):
            await send({"type": "http.response.body", "body": word, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * (int(scope["query_string"] or b"3"))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def test_replies_leave_in_one_write_and_streams_still_stream():
    port = free_port()
    recorded: list[_Recording] = []

    class Protocol(CoalescingHttpToolsProtocol):
        def connection_made(self, transport):  # type: ignore[override]
            rec = _Recording(transport)
            recorded.append(rec)
            super().connection_made(rec)

    async def main() -> None:
        server = uvicorn.Server(
            uvicorn.Config(_app, port=port, http=Protocol, lifespan="off", log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setblocking(False)
            for size in (3, 200_000):
                await loop.sock_sendall(sock, f"GET /?{size} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                got = b""
                while not got.endswith(b"x" * min(size, 1000)) or len(got) < size:
                    got += await loop.sock_recv(sock, 1 << 20)
            small, *big = recorded[0].writes
            assert small.startswith(b"HTTP/1.1 200") and small.endswith(
                b"\r\n\r\nxxx"
            )  # head and body together
            assert b"".join(big).endswith(b"x" * 200_000)  # a big body goes through, not joined
            recorded[0].writes.clear()
            await loop.sock_sendall(sock, b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            first = await loop.sock_recv(sock, 65536)
            assert b"one" in first and b"two" not in first  # parts written apart in time arrive apart
            rest = b""
            while not rest.endswith(b"0\r\n\r\n"):
                rest += await loop.sock_recv(sock, 65536)
            assert b"two" in rest
        server.should_exit = True
        await task

    asyncio.run(main())


def test_close_sends_what_is_pending():
    class Sink:
        def __init__(self):
            self.data, self.closed = [], False

        def write(self, data):
            self.data.append(data)

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

    async def main() -> None:
        sink = Sink()
        transport = CoalescingTransport(sink, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"head ")
        transport.write(b"body")
        assert sink.data == []
        transport.close()
        assert sink.data == [b"head body"] and sink.closed

    asyncio.run(main())
