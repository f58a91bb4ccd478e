"""A minimal HTTP/1.1 keep-alive connection for the sync transport, parsing with httptools.

``http.client`` spends about 0.1 ms per response in its e-mail-based header parser; a trivial
remote call should cost less than that in total on the client. This connection writes the
request in one ``sendall`` and feeds what it receives to httptools' C parser (the one uvicorn
uses on the server side), yielding body chunks as they arrive so streamed replies print live.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterator
from typing import Any

import httptools

from runhouse.protocol.buffers import POOL

RECV = 1 << 16  # per recv(); large bodies are received straight into one buffer instead
SMALL_PART = 1 << 16
BIG_BODY = 1 << 20  # bodies at least this large are received into one preallocated buffer


class HTTPError(OSError):
    """The connection broke or the peer sent something that is not HTTP/1.1."""


class _Reply:
    __slots__ = ("status", "headers", "chunks", "done", "keep_alive", "headers_done", "parser")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self.done = False
        self.keep_alive = True
        self.headers_done = False
        self.parser: Any = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        # Ask now: once the whole message is parsed the parser resets and always answers False.
        self.keep_alive = self.parser.should_keep_alive()
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class Connection:
    def __init__(
        self, host: str, port: int, timeout: float | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self.port = port
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        self.sock: socket.socket | ssl.SSLSocket | None = sock
        self._host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self._blocks: dict[tuple[tuple[str, str], ...], str] = {}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @property
    def closed(self) -> bool:
        return self.sock is None

    def _header_block(self, headers: dict[str, str]) -> str:
        """The Host line and ``headers`` as text, made once per distinct headers dict."""
        key = tuple(headers.items())
        block = self._blocks.get(key)
        if block is None:
            block = "\r\n".join([f"Host: {self._host_header}", *(f"{k}: {v}" for k, v in headers.items())])
            if len(self._blocks) < 32:
                self._blocks[key] = block
        return block

    def send(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        if self.sock is None:
            raise HTTPError("connection is closed")
        lines = [f"{method} {path} HTTP/1.1", self._header_block(headers)]
        if body is None:
            parts: list[Any] = []
        elif isinstance(body, bytes | bytearray | memoryview):
            parts = [body]
        else:
            parts = list(body)
        size = sum(memoryview(p).nbytes for p in parts)
        if parts or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {size}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write for the head and every small part; large buffers go out as they are (no copy).
        pending = [head]
        for part in parts:
            if memoryview(part).nbytes <= SMALL_PART:
                pending.append(part)
                continue
            self.sock.sendall(b"".join(pending))
            pending = []
            self.sock.sendall(part)
        if pending:
            self.sock.sendall(b"".join(pending))

    def receive(self) -> tuple[_Reply, Iterator[bytes]]:
        """Read the status and headers; return them and an iterator over body chunks."""
        reply = _Reply()
        parser = reply.parser = httptools.HttpResponseParser(reply)
        while not reply.headers_done:
            self._feed(parser, reply)
        length = reply.headers.get("content-length", "")
        if length.isdigit() and int(length) >= BIG_BODY and "transfer-encoding" not in reply.headers:
            return reply, self._big_body(reply, int(length))
        return reply, self._body(parser, reply)

    def _big_body(self, reply: _Reply, length: int) -> Iterator[Any]:
        """Receive a large body straight into one writable buffer (no per-chunk objects, no join)."""
        assert self.sock is not None
        buffer = POOL.take(length)  # a previous result's pages, once nothing refers to it
        POOL.trim_soon()
        view = memoryview(buffer)
        pos = 0
        while reply.chunks:  # what the header read already brought
            chunk = reply.chunks.popleft()
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        while pos < length:
            got = self.sock.recv_into(view[pos:], length - pos)
            if not got:
                self.close()
                raise HTTPError("the daemon closed the connection in the middle of a reply")
            pos += got
        view.release()
        if not reply.keep_alive:
            self.close()
        yield buffer

    def _feed(self, parser: Any, reply: _Reply) -> None:
        assert self.sock is not None
        data = self.sock.recv(RECV)
        if not data:
            self.close()
            if reply.status or reply.chunks or reply.headers:
                raise HTTPError("the daemon closed the connection in the middle of a reply")
            raise ConnectionResetError("the daemon closed the connection")
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.close()
            raise HTTPError(f"malformed HTTP reply: {e}") from e

    def _body(self, parser: Any, reply: _Reply) -> Iterator[bytes]:
        while True:
            while reply.chunks:
                yield reply.chunks.popleft()
            if reply.done:
                if not reply.keep_alive:
                    self.close()
                return
            self._feed(parser, reply)
