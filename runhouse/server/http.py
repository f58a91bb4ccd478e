"""The daemon's HTTP protocol: uvicorn's httptools protocol with its writes coalesced, and the
limits every connection meets before any request reaches authentication.

Coalescing: uvicorn writes a response's head and each body part with separate ``transport.write``
calls, and with ``TCP_NODELAY`` each becomes its own packet: the client wakes for the head, then
again for the body, and the daemon pays a syscall for each. Here a connection's writes are gathered
and sent together at the end of the current event-loop step, so a trivial call's reply leaves as
one packet. Big writes (a 100 MB result) are not copied: pending small parts go out first, then the
big one.

Limits (:class:`Limits`, built from the settings by the daemon): a request's line and headers may
not pass ``max_header`` bytes (431), its body may not pass ``max_body`` bytes whether it comes with a
Content-Length or chunked (413), its headers must arrive within ``header_timeout_s`` of its first
byte and its body may not stall for ``body_timeout_s`` (408), and past ``max_connections`` open
connections a new one closes the oldest idle or unfinished one, so half-sent requests cannot lock
out ``GET /check`` (503 with Retry-After only when every connection is busy with a call). They are
checked in the parser callbacks of :class:`LimitedProtocol`, which the daemon puts in front of the
fast path (:mod:`runhouse.server.fastpath`), so both paths get them; a complete request that
arrives in one read costs a few integer updates and no timer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_DIRECT = 64 * 1024  # parts this big are written through, never joined
_LINGER_S = 2.0  # after refusing a request that is still arriving, read and drop this long, so
# that the client reads the refusal instead of a connection reset


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
            if not self._transport.is_closing():
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


@dataclass(frozen=True)
class Limits:
    """What one connection may send, and how slowly, before the daemon gives up on it."""

    max_body: int = 2048 << 20  # bytes of one request body, Content-Length or chunked
    max_header: int = 64 << 10  # bytes of one request line plus its headers
    header_timeout_s: float = 30.0  # from a request's first byte (or the connection) to its blank line
    body_timeout_s: float = 30.0  # the longest silence while a request body is arriving
    max_connections: int = 1024  # open connections; past it the oldest idle or unfinished one goes


# Where the parser is on a connection. A whole request read in one go passes HEAD and BODY inside
# one ``data_received`` and is never watched; a timer runs only while a read ends mid-request.
_FRESH = 0  # connected, no byte yet
_DONE = 1  # between requests: the last one is read whole (its reply may still be on its way)
_HEAD = 2  # a request line and headers are arriving
_BODY = 3  # headers read, the body is arriving
_GONE = 4  # refused or evicted: closing, whatever else arrives is dropped


def _refusal(status: int, detail: str, extra: bytes = b"") -> bytes:
    """A whole response in the daemon's JSON error shape that closes the connection."""
    error = "BadRequest" if status < 500 else "ServerError"
    body = json.dumps({"error": error, "detail": detail, "status": status}).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        HTTPStatus(status).phrase.encode(),
        len(body),
    )
    return head + extra + b"connection: close\r\n\r\n" + body


class LimitedProtocol(CoalescingHttpToolsProtocol):
    """:class:`CoalescingHttpToolsProtocol` enforcing :attr:`limits` (see the module docstring).

    Put it first among a protocol's bases (``class P(LimitedProtocol, FastProtocol)``) so its
    parser callbacks run before any subclass can take a request elsewhere."""

    limits: ClassVar[Limits] = Limits()

    # The callbacks of the class after this one in the MRO, resolved once per class: on Python 3.11
    # a zero-arg super() call costs ~0.1 us, and these run several times per request.
    _lim_next_data_received: ClassVar[Callable[[Any, bytes], None]]
    _lim_next_on_message_begin: ClassVar[Callable[[Any], None]]
    _lim_next_on_headers_complete: ClassVar[Callable[[Any], None]]
    _lim_next_on_body: ClassVar[Callable[[Any, bytes], None]]
    _lim_next_on_message_complete: ClassVar[Callable[[Any], None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _bind_next(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lim_phase = _FRESH
        self._lim_seq = 0  # requests begun on this connection
        self._lim_head = 0  # bytes of the current request's line and headers read so far
        self._lim_body = 0  # bytes of the current request's body read so far
        # when the current head began (for the first request: the connection), or the body last moved
        self._lim_since = 0.0
        self._lim_since_seq = 1  # the request _lim_since belongs to
        self._lim_born = 0.0
        self._lim_timer: asyncio.TimerHandle | None = None

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._lim_born = self._lim_since = self.loop.time()
        cap = self.limits.max_connections
        if len(self.connections) > cap and not self._lim_make_room():
            self._lim_refuse(
                503,
                f"the daemon is at its limit of {cap} connections, all busy with calls; "
                "retry later or raise max_connections in the settings",
                extra=b"retry-after: 1\r\n",
            )
            return
        self._lim_timer = self.loop.call_later(self.limits.header_timeout_s, self._lim_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lim_phase = _GONE
        if self._lim_timer is not None:
            self._lim_timer.cancel()
            self._lim_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self._lim_phase
        if phase == _GONE:
            return
        seq = self._lim_seq
        if phase != _BODY:
            room = self.limits.max_header - (self._lim_head if phase == _HEAD else 0)
            if len(data) > room:
                self._lim_feed_head(data, room, phase, seq)
                return
        self._lim_next_data_received(data)
        if self._lim_phase >= _HEAD:  # this read ended mid-request
            self._lim_watch(len(data), phase, seq)

    # -- parser callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._lim_phase == _GONE:
            return
        self._lim_phase = _HEAD
        self._lim_seq += 1
        self._lim_body = 0
        self._lim_next_on_message_begin()

    def on_headers_complete(self) -> None:
        if self._lim_phase == _GONE:
            return
        self._lim_phase = _BODY
        self._lim_next_on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._lim_phase != _BODY:
            return  # refused: the rest of this read is dropped
        self._lim_body += len(body)
        if self._lim_body > self.limits.max_body:
            limit = self.limits.max_body
            self._lim_refuse(
                413,
                f"body is over the daemon's limit of {limit} bytes; raise max_body_mb in the settings or send less",
                linger=True,
            )
            return
        self._lim_next_on_body(body)

    def on_message_complete(self) -> None:
        if self._lim_phase == _GONE:
            return
        self._lim_phase = _DONE
        self._lim_next_on_message_complete()

    # -- header size ----------------------------------------------------------------------------
    def _lim_feed_head(self, data: bytes, room: int, phase: int, seq: int) -> None:
        """Feed a read that could take the head past its limit: the part that fits first, so that a
        head still unfinished after ``max_header`` bytes is refused before more of it is kept."""
        view = memoryview(data)
        if room > 0:
            self._lim_next_data_received(view[:room])  # type: ignore[arg-type]  # httptools takes any buffer
            if self._lim_phase == _GONE or self.transport.is_closing():
                return
        if self._lim_phase == _HEAD and self._lim_seq == (seq if phase == _HEAD else seq + 1):
            limit = self.limits.max_header
            self._lim_refuse(
                431,
                f"request line and headers are over the daemon's limit of {limit} bytes; "
                "raise max_header_kb in the settings or send less",
                linger=True,
            )
            return
        phase, seq, rest = self._lim_phase, self._lim_seq, view[max(room, 0) :]
        self._lim_next_data_received(rest)  # type: ignore[arg-type]
        if self._lim_phase >= _HEAD:
            self._lim_watch(len(rest), phase, seq)

    def _lim_moved(self) -> None:
        """Bytes of the current body arrived without passing through :meth:`data_received` (the
        fast path reads a large body straight into its buffer): its stall clock restarts."""
        if self._lim_phase == _BODY:
            self._lim_since = self.loop.time()

    def _lim_watch(self, size: int, phase: int, seq: int) -> None:
        """Book a read that ended mid-request (``phase``/``seq``: where it began) and make sure
        a timer watches the request."""
        now_phase = self._lim_phase
        if now_phase == _GONE:
            return
        if now_phase == _HEAD:
            if phase == _HEAD and self._lim_seq == seq:
                self._lim_head += size
            elif phase < _HEAD and self._lim_seq == seq + 1:
                self._lim_head = size
            else:  # a body ended and a head began inside this read: at most one read goes uncounted
                self._lim_head = 0
            if self._lim_since_seq != self._lim_seq:
                self._lim_since, self._lim_since_seq = self.loop.time(), self._lim_seq
            wait = self.limits.header_timeout_s
        else:
            self._lim_since = self.loop.time()
            wait = self.limits.body_timeout_s
        if self._lim_timer is None:
            self._lim_timer = self.loop.call_later(wait, self._lim_check)

    # -- timeouts --------------------------------------------------------------------------------
    def _lim_check(self) -> None:
        self._lim_timer = None
        phase = self._lim_phase
        if phase in (_DONE, _GONE) or self.transport.is_closing():
            return  # between requests uvicorn's keep-alive timeout applies
        limits = self.limits
        now = self.loop.time()
        wait = limits.body_timeout_s if phase == _BODY else limits.header_timeout_s
        if self.flow.read_paused or (phase != _BODY and not self._lim_free()):
            # not the client's doing (a queued request, an app reading slowly): its clock restarts
            self._lim_since = now
        else:
            wait += self._lim_since - now
            if wait <= 0:
                if phase == _FRESH:
                    self._lim_close()  # it never asked anything: nothing to answer
                else:
                    self._lim_refuse(
                        408,
                        f"the request did not arrive in time (headers within {limits.header_timeout_s:g} s, "
                        f"no pause over {limits.body_timeout_s:g} s in the body); send it whole",
                    )
                return
        self._lim_timer = self.loop.call_later(wait, self._lim_check)

    # -- connection cap ---------------------------------------------------------------------------
    def _lim_free(self) -> bool:
        """Whether no reply is being made on this connection (none started, or the last one done)."""
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and not self.pipeline

    def _lim_rank(self) -> tuple[int, float] | None:
        """Eviction order, lowest first: refused, then unfinished requests, then idle; oldest first.
        None: a reply is being made, the connection stays."""
        phase = self._lim_phase
        if phase == _GONE:
            return (0, self._lim_born)
        if not self._lim_free():
            return None
        return (2 if phase == _DONE else 1, self._lim_born)

    def _lim_make_room(self) -> bool:
        victim: LimitedProtocol | None = None
        best: tuple[int, float] | None = None
        for conn in self.connections:
            if conn is self or not isinstance(conn, LimitedProtocol):
                continue
            rank = conn._lim_rank()
            if rank is not None and (best is None or rank < best):
                victim, best = conn, rank
        if victim is None:
            return False
        if victim._lim_phase in (_HEAD, _BODY):
            victim._lim_refuse(
                503,
                "the daemon is at its connection limit and this request was the oldest unfinished one; "
                "send requests whole, or raise max_connections in the settings",
                extra=b"retry-after: 1\r\n",
            )
        else:
            victim._lim_close()
        return True

    # -- refusing ------------------------------------------------------------------------------------
    def _lim_answerable(self) -> bool:
        """Whether a refusal may be written now: nothing was answered for this request yet and no
        earlier reply is still on its way (it would be cut into)."""
        if self.pipeline:
            return False
        cycle = self.cycle
        if cycle is None:
            return True
        if self._lim_phase != _BODY:  # the cycle belongs to an earlier request
            return cycle.response_complete
        return not cycle.response_complete and not getattr(cycle, "response_started", False)

    def _lim_refuse(self, status: int, detail: str, *, linger: bool = False, extra: bytes = b"") -> None:
        """Answer ``status`` (when nothing was answered yet) and close. With ``linger``, keep
        reading and dropping a little while, since the client is still sending."""
        answer = self._lim_answerable()
        self._lim_close(close=False)
        transport = self.transport
        if not answer:
            transport.close()
            return
        transport.write(_refusal(status, detail, extra))
        if linger and transport.can_write_eof():
            transport.write_eof()
            self._lim_timer = self.loop.call_later(_LINGER_S, transport.close)
        else:
            transport.close()

    def _lim_close(self, close: bool = True) -> None:
        self._lim_phase = _GONE
        if self._lim_timer is not None:
            self._lim_timer.cancel()
            self._lim_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() says the client is gone; its replies are dropped
            cycle.message_event.set()
        if close:
            self.transport.close()


def _bind_next(cls: type[LimitedProtocol]) -> None:
    for name in (
        "data_received",
        "on_message_begin",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
    ):
        setattr(cls, f"_lim_next_{name}", getattr(super(LimitedProtocol, cls), name))


_bind_next(LimitedProtocol)


def with_limits(protocol: type[CoalescingHttpToolsProtocol], limits: Limits) -> type[LimitedProtocol]:
    """``protocol`` with :class:`LimitedProtocol`'s checks run before its own callbacks."""
    return cast(
        "type[LimitedProtocol]",
        type(f"Limited{protocol.__name__}", (LimitedProtocol, protocol), {"limits": limits}),
    )
