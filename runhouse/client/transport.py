"""Moving bytes to and from a daemon: a sync transport and an async one, nothing else.

The sync transport keeps one keep-alive connection per thread (:mod:`runhouse.client.http11`):
it adds a few tens of microseconds to a call, where general-purpose clients add several times
that. The async transport uses ``httpx.AsyncClient``. Both expose the same small
surface (open a request, iterate reply chunks), and the call logic on top lives in
:mod:`runhouse.client.codec`.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from runhouse.client.http11 import Connection
from runhouse.exceptions import ConnectionError_


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    scheme: str = "http"
    verify: bool | str = True  # for https: False, True (system CAs) or a CA bundle path
    headers: dict[str, str] = field(default_factory=dict)
    # Called before a connection is opened (sync) or a request sent (async); raises
    # ConnectionError_ when the address is not known to be ours right now. An SSH tunnel's local
    # port uses it: while its ssh process is being restarted the port is free, and another local
    # user who bound it would receive the request and its token (compute/forward.py).
    gate: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class SyncReply:
    def __init__(self, status: int, headers: dict[str, str], body: Iterator[bytes]) -> None:
        self.status = status
        self.content_type = headers.get("content-type", "")
        self._body = body

    def read(self) -> bytes:
        return b"".join(self._body)

    def chunks(self) -> Iterator[bytes]:
        return self._body


class SyncTransport:
    """One keep-alive connection per thread to one daemon (see :mod:`runhouse.client.http11`)."""

    def __init__(self, endpoint: Endpoint, timeout: float | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None
        if endpoint.scheme == "https":
            verify = endpoint.verify
            self._ssl = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    def _connect(self) -> Connection:
        if self.endpoint.gate is not None:
            self.endpoint.gate()
        try:
            return Connection(self.endpoint.host, self.endpoint.port, self.timeout, self._ssl)
        except OSError as e:
            raise ConnectionError_(f"cannot reach the runhouse daemon at {self.endpoint.url}: {e}") from e

    @contextmanager
    def open(
        self,
        method: str,
        path: str,
        body: list[Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[SyncReply]:
        all_headers = {**self.endpoint.headers, **(headers or {})} if headers else self.endpoint.headers
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.closed:
            conn = None
        reused = conn is not None
        reply = chunks = None
        for attempt in (0, 1):
            if conn is None:
                conn = self._local.conn = self._connect()
            try:
                conn.send(method, path, all_headers, body)
                reply, chunks = conn.receive()
                break
            except (ConnectionResetError, BrokenPipeError) as e:
                # A kept-alive connection the daemon closed while idle: retry once on a new one.
                conn.close()
                conn = self._local.conn = None
                if attempt or not reused:
                    raise ConnectionError_(
                        f"the daemon at {self.endpoint.url} closed the connection: {e}"
                    ) from e
            except OSError as e:
                conn.close()
                self._local.conn = None
                raise ConnectionError_(f"request to {self.endpoint.url}{path} failed: {e}") from e
            except BaseException:
                # Ctrl-C while waiting: the reply is never read here, and closing the connection
                # is what tells the daemon to cancel the call.
                conn.close()
                self._local.conn = None
                raise
        assert conn is not None and reply is not None and chunks is not None
        try:
            yield SyncReply(reply.status, reply.headers, chunks)
            for _ in chunks:  # drain what the caller did not read, so the connection is reusable
                pass
        except BaseException:  # an error or Ctrl-C mid-reply: closing also cancels the call on the cluster
            conn.close()
            self._local.conn = None
            raise

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
        # One client per event loop: a client's connections belong to the loop that opened them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            ep = self.endpoint
            client = httpx.AsyncClient(
                base_url=ep.url,
                headers=ep.headers,
                verify=ep.verify,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=256),
            )
            self._clients[loop] = client
        return client

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        body: list[Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[AsyncReply]:
        content = b"".join(body) if isinstance(body, list) else body
        if self.endpoint.gate is not None:  # httpx opens connections out of sight: every request
            self.endpoint.gate()
        try:
            async with self._client().stream(method, path, content=content, headers=headers) as response:
                yield AsyncReply(response)
        except httpx.TransportError as e:
            raise ConnectionError_(f"request to {self.endpoint.url}{path} failed: {e}") from e
