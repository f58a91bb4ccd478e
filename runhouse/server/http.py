"""uvicorn's httptools protocol with its writes coalesced: one reply, one ``send`` syscall.

uvicorn writes a response's head and each body part with separate ``transport.write`` calls, and
with ``TCP_NODELAY`` each becomes its own packet: the client wakes for the head, then again for
the body, and the daemon pays a syscall for each. Here a connection's writes are gathered and sent
together at the end of the current event-loop step, so a trivial call's reply leaves as one packet.
Big writes (a 100 MB result) are not copied: pending small parts go out first, then the big one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_DIRECT = 64 * 1024  # parts this big are written through, never joined


class CoalescingTransport:
    """A transport wrapper that delays ``write`` to the end of the loop step and joins the parts."""

    __slots__ = ("_transport", "_loop", "_parts", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[Any] = []
        self._scheduled = False

    def write(self, data: Any) -> None:
        if len(data) >= _DIRECT:
            self.flush()
            self._transport.write(data)
            return
        self._parts.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def flush(self) -> None:
        self._scheduled = False
        parts = self._parts
        if not parts:
            return
        self._parts = []
        if self._transport.is_closing():
            return
        self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._parts = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]  # the reply is whole: send it now
        super().on_response_complete()
