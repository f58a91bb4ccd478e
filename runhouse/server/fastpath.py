"""The daemon's fast path: plain calls served from the HTTP parser's callbacks, without ASGI.

A call (``POST /{key}/{method}``) that carries the cluster token, a known Host, no Origin and a
Content-Length is the daemon's whole hot path. For those, the protocol below skips uvicorn's
per-request machinery (a task, an ASGI scope, receive/send messages, the middleware chain): the
body is collected as it is parsed, handed to the worker when complete, and when the worker's first
reply is also its last (a result or an error) the HTTP response is written straight from that
reply's callback. A call whose first reply is printed output or a generator item continues as a
task that streams the reply with chunked encoding, through the same relay code as the ASGI path.

Everything else (other routes, Den tokens, refusals, chunked bodies, ``Expect``, a
request pipelined behind an unfinished one) takes uvicorn's normal path, and the two never answer
out of order: while a fast call is in flight, later requests on the connection queue up exactly as
uvicorn queues pipelined requests.

A client that closes its connection while its fast call is in flight cancels the call: the
protocol's ``connection_lost`` tells the worker (no task or timer per call watches for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import unquote

import httptools

from runhouse.protocol.buffers import POOL
from runhouse.protocol.messages import FINAL
from runhouse.server.auth import GuardMiddleware
from runhouse.server.denauth import Caller
from runhouse.server.http import CoalescingHttpToolsProtocol, Limits
from runhouse.server.routes.calls import submit_call
from runhouse.server.routes.relay import Reply, final_reply, relay, reply_for_error
from runhouse.server.state import DaemonState
from runhouse.server.workers import GONE, PendingCall, WorkerHandle

log = logging.getLogger("runhouse.daemon")

# A body past this size is received into one buffer of its declared length (from the large-buffer
# pool) rather than gathered in a list joined at the end: what came with the headers is copied in,
# and the rest is read from the socket straight into that buffer by :class:`_BodySink`, with no
# parser and no per-read bytes objects. Bodies of any size the daemon's limits allow take the fast
# path (the guard admits only a declared length within them).
SMALL_BODY = 1 << 20
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class _FastCycle:
    """Stands in for uvicorn's request cycle while a fast call is in flight, so that requests
    pipelined behind it wait their turn and a shutdown lets it finish."""

    __slots__ = ("response_complete", "keep_alive", "disconnected", "message_event")

    def __init__(self, keep_alive: bool) -> None:
        self.response_complete = False
        self.keep_alive = keep_alive
        self.disconnected = False
        self.message_event = self  # uvicorn calls .set() on it when the client goes away

    def set(self) -> None:
        pass


class FastCalls:
    """What the fast path needs from the daemon: its state, its guard and its fixed routes."""

    def __init__(self, state: DaemonState, guard: GuardMiddleware, fixed_paths: frozenset[str]) -> None:
        self.state = state
        self.guard = guard
        self.fixed_paths = fixed_paths

    def route(
        self, raw_path: bytes, headers: list[tuple[bytes, bytes]], http11: bool, max_body: int
    ) -> tuple[str, str, Caller] | None:
        """``(key, method, caller)`` when this request may take the fast path, else None."""
        path = raw_path.decode("latin-1")
        if path in self.fixed_paths:
            return None
        parts = path.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return None
        caller = self.guard.fast_caller(headers, max_body, path, http11)
        if caller is None:
            return None
        return unquote(parts[1]), unquote(parts[2]), caller


def make_protocol(fast: FastCalls) -> type[CoalescingHttpToolsProtocol]:
    """The daemon's HTTP protocol class, bound to ``fast``."""

    class DaemonHttpProtocol(_FastProtocol):
        _fast = fast

    return DaemonHttpProtocol


class _FastProtocol(CoalescingHttpToolsProtocol):
    _fast: FastCalls
    limits: ClassVar[Limits] = (
        Limits()
    )  # LimitedProtocol's wins: it is first among the bases the daemon serves

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._call: tuple[str, str, Caller] | None = None  # (key, method, caller) of a fast request
        self._body: list[bytes] = []
        self._big: bytearray | None = None  # the body of a fast call past SMALL_BODY
        self._big_have = 0
        self._fast_cycle: _FastCycle | None = None
        self._content_type = ""
        self._in_flight: tuple[WorkerHandle, int, PendingCall] | None = None  # the fast call answered now

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        big = self._big
        if (
            big is not None
            and self._call is not None
            and self._big_have < len(big)
            and not self.transport.is_closing()
        ):  # the rest of a large body: read straight into it
            self.transport.set_protocol(_BodySink(self, big))

    def _big_body_read(self) -> None:
        """A :class:`_BodySink` filled the body: this protocol reads the connection again, with a
        fresh parser (the old one still waits for the body), and the request is complete."""
        self.parser = _parser(self)
        self.on_message_complete()  # the class's whole chain, limits first

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._call = None

    def on_headers_complete(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.expect_100_continue and self.parser.get_method() == b"POST":
            parsed = httptools.parse_url(self.url)
            if not parsed.query:
                http11 = self.parser.get_http_version() == "1.1"
                call = self._fast.route(parsed.path, self.headers, http11, self.limits.max_body)
                if call is not None:
                    keep_alive = http11 and self.parser.should_keep_alive()
                    self._call, self._body = call, []
                    self._fast_cycle = _FastCycle(keep_alive)
                    self.cycle = self._fast_cycle  # type: ignore[assignment]
                    self._content_type = ""
                    self._big = None
                    for name, value in self.headers:
                        if name == b"content-type":
                            self._content_type = value.decode("latin-1")
                        elif name == b"content-length" and int(value) > SMALL_BODY:
                            # Its declared length (admitted under max_body): pages a recent large
                            # body used, when nothing refers to it any more (protocol/buffers.py).
                            self._big, self._big_have = POOL.take(int(value)), 0
                            POOL.trim_soon()
                    return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._call is not None:
            if self._big is not None:
                have = self._big_have
                self._big[have : have + len(body)] = body  # the parser never passes the declared length
                self._big_have = have + len(body)
            else:
                self._body.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        call = self._call
        if call is None:
            super().on_message_complete()
            return
        self._call = None
        raw: bytes | bytearray
        if self._big is not None:
            raw, self._big = self._big, None
        else:
            raw = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        state = self._fast.state
        state.fast_calls += 1
        try:
            worker, cid, pending, fmt, run_name = submit_call(
                state, call[2], "POST", self._content_type, b"", raw, call[0], call[1]
            )
        except Exception as exc:  # noqa: BLE001 - mapped to a status by type
            self._finish(reply_for_error(exc))
            return
        pending.notify = lambda: self._first_reply(worker, cid, pending, fmt, run_name)
        self._in_flight = (worker, cid, pending)

    def connection_lost(self, exc: Exception | None) -> None:
        in_flight = self._in_flight
        if in_flight is not None:  # the client went away mid-call: cancel it on the worker
            self._in_flight = None
            worker, cid, pending = in_flight
            pending.notify = None
            pending.push(GONE, None)  # ends a streaming relay waiting for the next reply
            worker.cancel(cid)
        super().connection_lost(exc)

    # -- replies --------------------------------------------------------------------------------
    def _first_reply(
        self, worker: WorkerHandle, cid: int, pending: PendingCall, fmt: str, run_name: str | None
    ) -> None:
        try:
            header, body = pending.first()
            if isinstance(header, FINAL):
                self._in_flight = None
                pending.take()
                worker.forget(cid)
                self._finish(final_reply(header, body, fmt))
                return
            self.loop.create_task(self._stream(worker, cid, pending, fmt, run_name))
        except Exception as exc:  # noqa: BLE001 - never let a reply problem reach the worker channel
            log.exception("fast path failed to answer a call")
            self._in_flight = None
            worker.cancel(cid)
            self._finish(reply_for_error(exc))

    async def _stream(
        self, worker: WorkerHandle, cid: int, pending: PendingCall, fmt: str, run_name: str | None
    ) -> None:
        writer = _ChunkedWriter(self)
        try:
            reply = await relay(self._fast.state, worker, cid, pending, fmt, run_name, watch=False)
            await reply({}, _no_receive, writer.send)
        except Exception as exc:  # noqa: BLE001 - the head may be out already: end the connection
            log.exception("streamed call failed")
            if writer.started:
                self.transport.close()
            else:
                self._finish(reply_for_error(exc))
            return
        finally:
            if self._in_flight is not None and self._in_flight[2] is pending:  # not a next request's
                self._in_flight = None
        if not writer.done:
            self.transport.close()

    def _finish(self, reply: Reply) -> None:
        """Write a whole response and let the connection go on to its next request."""
        cycle = self._fast_cycle
        if cycle is None:
            return
        if not self.transport.is_closing():
            size = sum(len(p) for p in reply.parts)
            head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
                reply.status,
                _REASONS.get(reply.status, b"Unknown"),
                reply.content_type,
                size,
                b"" if cycle.keep_alive else b"connection: close\r\n",
            )
            self.transport.write(head)
            for part in reply.parts:
                self.transport.write(part)
        self._complete()

    def _complete(self) -> None:
        cycle = self._fast_cycle
        assert cycle is not None
        self._fast_cycle = None
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()  # resumes reading, starts a queued request, arms keep-alive


def _parser(protocol: Any) -> Any:
    """A request parser for ``protocol``, made as uvicorn's ``HttpToolsProtocol.__init__`` makes it."""
    parser = httptools.HttpRequestParser(protocol)
    with contextlib.suppress(AttributeError):  # httptools < 0.6.3
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


class _BodySink(asyncio.BufferedProtocol):
    """The connection's protocol while the rest of a large fast-call body arrives: the transport
    reads into the body's own buffer, never past its end (a pipelined request behind it stays in
    the socket for the HTTP protocol). It hands the connection back when the body is whole, and
    as soon as the HTTP protocol has given the request up (refused it, or lost the connection)."""

    def __init__(self, owner: _FastProtocol, body: bytearray) -> None:
        self._owner = owner
        self._body = body
        self._scratch: bytearray | None = None

    def _mine(self) -> bool:
        return self._owner._big is self._body and not self._owner.transport.is_closing()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._mine():
            return memoryview(self._body)[self._owner._big_have :]
        self._scratch = bytearray(64 * 1024)  # given up: what arrives goes to the HTTP protocol
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        owner = self._owner
        if self._scratch is not None:
            data, self._scratch = bytes(self._scratch[:nbytes]), None
            owner.transport.set_protocol(owner)
            owner.data_received(data)
            return
        owner._big_have += nbytes
        moved = getattr(owner, "_lim_moved", None)
        if moved is not None:
            moved()  # the body-stall timer: the body moved
        if owner._big_have == len(self._body):
            owner.transport.set_protocol(owner)
            owner._big_body_read()

    def eof_received(self) -> bool | None:
        self._owner.eof_received()
        return None  # the transport closes its read side

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()


class _ChunkedWriter:
    """A minimal ASGI ``send`` for a streamed fast-path reply: chunked transfer encoding."""

    def __init__(self, protocol: _FastProtocol) -> None:
        self.protocol = protocol
        self.started = False
        self.done = False
        self._chunked = True

    async def send(self, message: dict[str, Any]) -> None:
        protocol = self.protocol
        transport = protocol.transport
        cycle = protocol._fast_cycle
        if cycle is None:
            return
        if message["type"] == "http.response.start":
            status = int(message["status"])
            lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
            for name, value in message.get("headers", []):
                if name.lower() == b"content-length":
                    self._chunked = False
                lines.append(b"%s: %s\r\n" % (name, value))
            if self._chunked:
                lines.append(b"transfer-encoding: chunked\r\n")
            if not cycle.keep_alive:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            self.started = True
            if not transport.is_closing():
                transport.write(b"".join(lines))
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not transport.is_closing():
            if self._chunked:
                if body:
                    transport.write(b"%x\r\n" % len(body))
                    transport.write(body)
                    transport.write(b"\r\n")
                if not more:
                    transport.write(b"0\r\n\r\n")
            elif body:
                transport.write(body)
        if not more:
            self.done = True
            protocol._complete()
        elif protocol.flow.write_paused:
            await protocol.flow.drain()


async def _no_receive() -> dict[str, Any]:
    await asyncio.Event().wait()  # a fast call's body is already read; nothing more comes
    return {"type": "http.disconnect"}
