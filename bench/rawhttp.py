"""A minimal keep-alive HTTP/1.1 client that sends one pre-built request, used for every server.

Latency comparisons between servers are only fair if the client costs the same for all of them,
so this client does as little as possible: one ``sendall`` of fixed request bytes, then a
``recv`` loop that finds the end of the headers and reads ``Content-Length`` bytes of body. It
reconnects when the server closes the connection (gunicorn's sync workers close after every
response; that reconnect is part of the cost a client of that server pays, so it is timed).
"""

from __future__ import annotations

import json
import socket
from typing import Any

CALL_PATH = "/add/call"
CALL_BODY = json.dumps(
    {"data": {"args": [1, 2], "kwargs": {}}, "serialization": "none"}, separators=(",", ":")
).encode()
EXPECTED = b"3"


class HTTPFailure(RuntimeError):
    """The server answered with a non-200 status or something this client cannot parse."""


def build_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The exact bytes of a POST request (the same header set for every server)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawHTTPClient:
    """One keep-alive connection to ``127.0.0.1:port`` sending the same request again and again."""

    def __init__(
        self,
        port: int,
        path: str = CALL_PATH,
        body: bytes = CALL_BODY,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.request = build_request(port, path, body, headers or {})
        self.timeout = timeout
        self.connections_opened = 0
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections_opened += 1
        self._sock = sock
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self) -> bytes:
        """Send the request; return the reply body. Retries once if a kept-alive socket was closed."""
        reused = self._sock is not None
        sock = self._sock or self._connect()
        try:
            sock.sendall(self.request)
            return self._read_reply(sock)
        except (ConnectionResetError, BrokenPipeError, EOFError):
            self.close()
            if not reused:
                raise
            return self._read_reply_fresh()

    def _read_reply_fresh(self) -> bytes:
        sock = self._connect()
        sock.sendall(self.request)
        return self._read_reply(sock)

    def _read_reply(self, sock: socket.socket) -> bytes:
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection before replying")
            buf += chunk
        lines = buf[:end].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise HTTPFailure("chunked replies are not expected from a trivial call")
        if length is None:
            raise HTTPFailure("reply has no Content-Length")
        body = buf[end + 4 :]
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise HTTPFailure("server closed the connection in the middle of a reply")
            body += chunk
        if close:
            self.close()
        if status != 200:
            raise HTTPFailure(f"HTTP {status} from port {self.port}: {body[:300]!r}")
        return body


def check_call(client: RawHTTPClient) -> Any:
    """One call that must return the JSON result ``3``; raises otherwise."""
    body = client.call()
    if body.strip() != EXPECTED:
        raise HTTPFailure(f"port {client.port} answered {body[:300]!r}, expected {EXPECTED!r}")
    return json.loads(body)
