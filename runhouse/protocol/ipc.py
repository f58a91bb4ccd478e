"""The daemon-worker channel: framed messages over a local stream socket.

Each message is a small header (a pickled tuple, written and read only by our own processes)
and an optional body (user payload bytes, passed through untouched)::

    u32 header length | u64 body length | header (pickle protocol 5) | body

:class:`Channel` is an :class:`asyncio.BufferedProtocol`: small messages are parsed straight out
of one reusable receive buffer, and a large body is received directly into a buffer of its own
size, so a 100 MB array crosses the socket without intermediate copies. That buffer comes from
:data:`~runhouse.protocol.buffers.POOL`: when the previous large body is no longer referenced,
its pages are used again instead of fresh ones.

The socket is one end of a ``socketpair`` the daemon made when it spawned the worker, so nothing
else on the machine can connect to it; that is why the header may be a pickle. A worker on another
node of a multi-node cluster reaches the daemon over TCP instead, and proves who it is with
:data:`PREAMBLE` (raw bytes: a worker id and a secret) before the daemon reads a single header;
:func:`tune_tcp` makes such a connection fail within seconds when its peer's link is cut.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

from runhouse.protocol.buffers import MIN_BYTES, POOL

_PREFIX = struct.Struct(">IQ")
_SCRATCH = 256 * 1024
_SMALL = 64 * 1024

PREAMBLE = struct.Struct(">4s16s32s")  # magic, worker id, secret: the first bytes a TCP worker sends
MAGIC = b"RHW1"
DEAD_PEER_S = 3.0  # a TCP peer that acknowledges nothing for this long is gone

Body = bytes | bytearray | memoryview | list[Any] | None  # a list is sent back to back
OnMessage = Callable[[Any, Body], None]
OnClose = Callable[[Exception | None], None]


class Channel(asyncio.BufferedProtocol):
    """One end of a daemon-worker connection. ``on_message(header, body)`` gets each message."""

    def __init__(self, on_message: OnMessage, on_close: OnClose) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._scratch = bytearray(_SCRATCH)
        self._start = 0
        self._end = 0
        self._body: bytearray | None = None
        self._body_have = 0
        self._body_header: Any = None
        self._pending: list[Any] | None = None  # messages waiting for the end of this loop step
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    # -- sending ------------------------------------------------------------------------
    def send(self, header: Any, body: Body = None) -> None:
        if self._transport is None or self.closed:
            raise ConnectionResetError("channel is closed")
        head = pickle.dumps(header, protocol=5)
        parts = body if isinstance(body, list) else ([body] if body is not None else [])
        size = sum(memoryview(p).nbytes for p in parts)
        prefix = _PREFIX.pack(len(head), size) + head
        pending = self._pending
        if pending is not None:  # not the first message this loop step: it leaves with the next flush
            pending.append(prefix)
            pending.extend(parts)
            return
        # The first message of a loop step is written at once (no added latency for a lone call);
        # any more in the same step are gathered and written together at the end of the step.
        self._pending = []
        assert self._loop is not None
        self._loop.call_soon(self._flush)
        if size > _SMALL:
            self._transport.writelines([prefix, *parts])  # large buffers are not copied
        elif size:
            self._transport.write(b"".join([prefix, *parts]))  # one syscall for small messages
        else:
            self._transport.write(prefix)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if not pending or self._transport is None or self.closed:
            return
        if sum(memoryview(p).nbytes for p in pending) > _SMALL:
            self._transport.writelines(pending)
        else:
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_close(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body is not None:
            return memoryview(self._body)[self._body_have :]
        if self._end == len(self._scratch):
            pending = self._end - self._start
            if self._start:
                self._scratch[:pending] = self._scratch[self._start : self._end]
                self._start, self._end = 0, pending
            if self._end == len(self._scratch):  # one header larger than the buffer
                self._scratch.extend(bytes(len(self._scratch)))
        return memoryview(self._scratch)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._body is not None:
            self._body_have += nbytes
            if self._body_have == len(self._body):
                header, body = self._body_header, self._body
                self._body, self._body_header, self._body_have = None, None, 0
                self._on_message(header, body)
            return
        self._end += nbytes
        self._parse()

    def _parse(self) -> None:
        view = memoryview(self._scratch)
        try:
            self._parse_view(view)
        finally:
            view.release()
        if self._start == self._end:
            self._start = self._end = 0

    def _parse_view(self, view: memoryview) -> None:
        scratch = self._scratch
        while True:
            avail = self._end - self._start
            if avail < _PREFIX.size:
                break
            hlen, blen = _PREFIX.unpack_from(scratch, self._start)
            hstart = self._start + _PREFIX.size
            if avail < _PREFIX.size + hlen:
                break
            header = pickle.loads(view[hstart : hstart + hlen])
            bstart = hstart + hlen
            inbuf = min(blen, self._end - bstart)
            if inbuf == blen:
                body = bytes(view[bstart : bstart + blen]) if blen else None
                self._start = bstart + blen
                self._on_message(header, body)
                continue
            big = POOL.take(blen)  # a recent body's pages when it is free: no fresh pages to fault in
            if blen >= MIN_BYTES:
                POOL.trim_soon()
            big[:inbuf] = view[bstart : bstart + inbuf]
            self._body, self._body_have, self._body_header = big, inbuf, header
            self._start = self._end = 0
            break


async def open_channel(sock: Any, on_message: OnMessage, on_close: OnClose) -> Channel:
    """Wrap a connected stream socket (e.g. one end of ``socket.socketpair``) in a Channel."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.connect_accepted_socket(lambda: Channel(on_message, on_close), sock)
    return protocol


def tune_tcp(sock: socket.socket, dead_peer_s: float = DEAD_PEER_S) -> None:
    """Set a daemon-worker TCP connection up for small messages and quick failure.

    ``TCP_NODELAY``: a call's few bytes leave at once. Keepalive probes every second after a
    second idle, and ``TCP_USER_TIMEOUT``: whether the connection is idle or has data in flight, a
    peer that acknowledges nothing for ``dead_peer_s`` seconds (its node died, its link was cut)
    ends the connection, and every call waiting on it fails then instead of hanging."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    probes = max(1, int(dead_peer_s))
    for option, value in (("TCP_KEEPIDLE", 1), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", probes)):
        if hasattr(socket, option):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead_peer_s * 1000))
