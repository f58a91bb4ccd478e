"""Moving bytes to and from a daemon: a sync transport and an async one, nothing else.

The sync transport uses the standard library's ``http.client`` with one keep-alive connection per
thread: it adds about a tenth of a millisecond to a call, where general-purpose clients add
several times that. The async transport uses ``httpx.AsyncClient``. Both expose the same small
surface (open a request, iterate reply chunks), and the call logic on top lives in
:mod:`runhouse.client.codec`.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from runhouse.exceptions import ConnectionError_

_SMALL_BODY = 1 << 16
CHUNK = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    scheme: str = "http"
    verify: bool | str = True  # for https: False, True (system CAs) or a CA bundle path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _join(parts: list[Any] | bytes | None) -> Any:
    if parts is None or isinstance(parts, bytes | bytearray):
        return parts
    total = sum(len(p) for p in parts)
    if total <= _SMALL_BODY:
        return b"".join(parts)
    return parts


class SyncReply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self._r = response
        self.status = response.status
        self.content_type = response.getheader("content-type", "") or ""

    def read(self) -> bytes:
        return self._r.read()

    def chunks(self) -> Iterator[bytes]:
        while True:
            data = self._r.read1(CHUNK)
            if not data:
                return
            yield data


class SyncTransport:
    """One keep-alive ``http.client`` connection per thread to one daemon."""

    def __init__(self, endpoint: Endpoint, timeout: float | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._local = threading.local()

    def _connect(self) -> http.client.HTTPConnection:
        ep = self.endpoint
        conn: http.client.HTTPConnection
        if ep.scheme == "https":
            context = ssl.create_default_context(cafile=ep.verify if isinstance(ep.verify, str) else None)
            if ep.verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(ep.host, ep.port, timeout=self.timeout, context=context)
        else:
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=self.timeout)
        try:
            conn.connect()
        except OSError as e:
            raise ConnectionError_(f"cannot reach the runhouse daemon at {ep.url}: {e}") from e
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    @contextmanager
    def open(self, method: str, path: str, body: list[Any] | bytes | None = None,
             headers: dict[str, str] | None = None) -> Iterator[SyncReply]:
        all_headers = {**self.endpoint.headers, **(headers or {})}
        payload = _join(body)
        if payload is not None and not isinstance(payload, bytes | bytearray):
            all_headers["Content-Length"] = str(sum(len(p) for p in payload))
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        reused = conn is not None
        for attempt in (0, 1):
            if conn is None:
                conn = self._local.conn = self._connect()
            try:
                conn.request(method, path, body=payload, headers=all_headers)
                response = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the daemon closed while idle: retry once on a fresh one.
                conn.close()
                conn = self._local.conn = None
                if attempt or not reused:
                    raise ConnectionError_(f"the daemon at {self.endpoint.url} closed the connection: {e}") from e
            except OSError as e:
                conn.close()
                self._local.conn = None
                raise ConnectionError_(f"request to {self.endpoint.url}{path} failed: {e}") from e
        reply = SyncReply(response)
        try:
            yield reply
        except BaseException:
            conn.close()  # the reply was not read to the end; the connection is unusable
            self._local.conn = None
            raise
        if not response.isclosed():
            response.read()  # drain so the connection can be reused

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class AsyncReply:
    def __init__(self, response: httpx.Response) -> None:
        self._r = response
        self.status = response.status_code
        self.content_type = response.headers.get("content-type", "")

    async def read(self) -> bytes:
        return await self._r.aread()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for data in self._r.aiter_raw():
            yield data


class AsyncTransport:
    """An ``httpx.AsyncClient`` per event loop, to one daemon."""

    def __init__(self, endpoint: Endpoint, timeout: float | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        import asyncio

        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            ep = self.endpoint
            client = httpx.AsyncClient(
                base_url=ep.url, headers=ep.headers, verify=ep.verify,
                timeout=httpx.Timeout(self.timeout), limits=httpx.Limits(max_connections=256),
            )
            self._clients[loop_id] = client
        return client

    @asynccontextmanager
    async def open(self, method: str, path: str, body: list[Any] | bytes | None = None,
                   headers: dict[str, str] | None = None) -> AsyncIterator[AsyncReply]:
        content = b"".join(body) if isinstance(body, list) else body
        try:
            async with self._client().stream(method, path, content=content, headers=headers) as response:
                yield AsyncReply(response)
        except httpx.TransportError as e:
            raise ConnectionError_(f"request to {self.endpoint.url}{path} failed: {e}") from e
