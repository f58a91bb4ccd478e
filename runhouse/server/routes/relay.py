"""Turning a worker's replies into an HTTP response, in our frame format or as JSON envelopes.

The first reply decides the shape: a final reply (result, error, ok) becomes one plain response
with a Content-Length; anything else (printed output, a generator item) starts a streamed
response that relays replies as they come. A call that prints nothing therefore pays nothing for
output streaming.

A caller that disconnects cancels its call: while a reply is awaited or streamed, the ASGI
``receive`` is watched for ``http.disconnect`` (uvicorn's ``send`` drops writes to a closed
connection silently, so writing would not tell), and the worker is told to cancel the call. The
daemon's fast path watches its connection itself (``connection_lost``) and pushes
:data:`~runhouse.server.workers.GONE` to the call's replies, which ends a relay the same way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from runhouse.exceptions import RunhouseError, status_for
from runhouse.protocol.errors import WireError
from runhouse.protocol.messages import FINAL, End, Error, ErrorInfo, FinalReply, Item, Ok, Out, Result
from runhouse.protocol.wire import (
    FRAMES_CONTENT_TYPE,
    NDJSON_CONTENT_TYPE,
    OutputType,
    encode_frame,
    json_envelope,
)
from runhouse.server.state import DaemonState
from runhouse.server.workers import GONE, Message, PendingCall, WorkerHandle

log = logging.getLogger("runhouse.daemon")


def error_response(status: int, error: str, detail: str) -> Response:
    body = json.dumps({"error": error, "detail": detail, "status": status}).encode()
    return Response(body, status_code=status, media_type="application/json")


def error_reply(status: int, error: str, detail: str) -> Reply:
    """The same error body as :func:`error_response`, as a :class:`Reply`."""
    body = json.dumps({"error": error, "detail": detail, "status": status}).encode()
    return Reply([body], "application/json", status)


def reply_for_error(exc: Exception) -> Reply:
    """The response for an exception raised while handling a call: our errors and wire errors by
    type (4xx mostly), anything else a logged 500."""
    if isinstance(exc, RunhouseError):
        return error_reply(status_for(exc), type(exc).__name__, str(exc))
    if isinstance(exc, WireError):
        return error_reply(400, "BadRequest", str(exc))
    log.error("unexpected error in a call", exc_info=exc)
    return error_reply(500, "ServerError", f"{type(exc).__name__}: {exc}")


class Reply:
    """A whole reply as a few body parts (a big payload is sent without joining it)."""

    __slots__ = ("status", "parts", "content_type")

    def __init__(self, parts: list[Any], content_type: str, status: int = 200) -> None:
        self.status = status
        self.parts = parts
        self.content_type = content_type.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = sum(len(p) for p in self.parts)
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", self.content_type), (b"content-length", str(size).encode())],
            }
        )
        last = len(self.parts) - 1
        for i, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < last})
        if last < 0:
            await send({"type": "http.response.body", "body": b""})


def _error_fields(info: ErrorInfo) -> dict[str, Any]:
    return {"type": info["type"], "message": info["message"], "traceback": info["traceback"]}


def _frame(msg: Message, body: Any) -> list[Any]:
    if isinstance(msg, Result):
        if msg.extra:
            extra = {"output_type": OutputType.RESULT, "serialization": msg.serialization, **msg.extra}
            return encode_frame(extra, body or b"")
        return encode_frame(
            {"output_type": OutputType.RESULT, "serialization": msg.serialization}, body or b""
        )
    if isinstance(msg, Out):
        return encode_frame({"output_type": OutputType.STDOUT}, msg.text.encode())
    if isinstance(msg, Item):
        return encode_frame(
            {"output_type": OutputType.STREAM_ITEM, "serialization": msg.serialization}, body or b""
        )
    if isinstance(msg, Error):
        pickled = msg.info["pickled"]
        meta: dict[str, Any] = {
            "output_type": OutputType.EXCEPTION,
            "error": _error_fields(msg.info),
            "serialization": "pickle" if pickled else None,
        }
        return encode_frame(meta, pickled or b"")
    if isinstance(msg, End):
        return encode_frame({"output_type": OutputType.SUCCESS})
    return encode_frame(
        {"output_type": OutputType.CONFIG, "serialization": "json"}, json.dumps(_value(msg)).encode()
    )


def _value(msg: Message) -> Any:
    """An ``Ok`` reply's value (no other reply has one)."""
    if not isinstance(msg, Ok):
        raise TypeError(f"cannot relay a {type(msg).__name__} message to the caller")
    return msg.value


def _envelope(msg: Message, body: Any) -> bytes:
    if isinstance(msg, Out):  # a list of lines (ends kept), as the original system sent printed output
        return json_envelope(OutputType.STDOUT, msg.text.splitlines(keepends=True), "none")
    if isinstance(msg, Item | Result):
        ser = msg.serialization
        data = (
            base64.b64encode(body or b"").decode()
            if ser == "pickle"
            else (bytes(body or b"").decode() or "null")
        )
        out_type = OutputType.STREAM_ITEM if isinstance(msg, Item) else OutputType.RESULT
        return json_envelope(out_type, data, ser)
    if isinstance(msg, Error):
        info = msg.info
        pickled = info["pickled"]
        error = _error_fields(info)
        if pickled:
            error["pickled"] = base64.b64encode(pickled).decode()
        return json_envelope(OutputType.EXCEPTION, error, "pickle" if pickled else "json")
    if isinstance(msg, End):
        return json_envelope(OutputType.SUCCESS, None, "none")
    return json_envelope(OutputType.CONFIG, _value(msg), "none")


def _simple_json(msg: Message, body: Any) -> Any:
    """Reply for ``serialization: none``: the bare JSON result."""
    if isinstance(msg, Result):
        return Reply([body or b"null"], "application/json")
    if isinstance(msg, Error):
        info = msg.info
        return error_reply(
            info.get("http_status", 500),
            info["type"],
            info["message"] + ("\n" + info["traceback"] if info["traceback"] else ""),
        )
    if isinstance(msg, Ok):
        return Reply([json.dumps(msg.value).encode()], "application/json")
    return Reply([b"null"], "application/json")


OnFinal = Callable[[FinalReply], None] | None


def final_reply(msg: Message, body: Any, fmt: str) -> Reply:
    """The whole response for a call whose first reply is its last (a result, an error, ok)."""
    if isinstance(msg, Error):
        info = msg.info
        status = info.get("status")  # about the request itself (not a user exception)
        if status is not None:
            return error_reply(status, info["type"].rsplit(".", 1)[-1], info["message"])
        code = info.get("http_status", 500)
    else:
        code = 200
    if fmt == "frames":
        return Reply(_frame(msg, body), FRAMES_CONTENT_TYPE)
    if fmt == "none":
        return _simple_json(msg, body)
    return Reply([_envelope(msg, body)], "application/json", code)


async def relay(
    state: DaemonState,
    worker: WorkerHandle,
    cid: int,
    pending: PendingCall,
    fmt: str,
    run_name: str | None,
    on_final: OnFinal = None,
    *,
    watch: bool = True,
) -> Any:
    """The ASGI reply for a submitted request; ``fmt`` is ``frames``, ``json`` or ``none``.

    The reply waits for the worker when it is sent, watching ``receive`` for the caller going away
    (unless ``watch`` is False: the fast path watches its connection itself). ``on_final(header)``
    sees the final reply before it is sent; with it (deploy) the first reply is awaited here, so
    the route can look at the reply's ``status`` before it goes out.
    """
    if on_final is None:
        return _Relay(state, worker, cid, pending, fmt, run_name, watch)
    pending = _Watched(pending, on_final)
    try:
        header, body = await pending.next()
    except BaseException:
        worker.cancel(cid)
        raise
    return _shape(state, worker, cid, pending, fmt, run_name, header, body)


def _shape(
    state: DaemonState,
    worker: WorkerHandle,
    cid: int,
    pending: PendingCall,
    fmt: str,
    run_name: str | None,
    header: Message,
    body: Any,
) -> Any:
    """The reply that starts with the first worker message ``header``: whole or streamed."""
    if isinstance(header, FINAL):
        worker.forget(cid)
        return final_reply(header, body, fmt)
    return _Streamed(state, worker, cid, pending, fmt, run_name, header, body)


class _Relay:
    """Waits for a call's first reply when sent, then answers whole or streams (see :func:`relay`)."""

    def __init__(
        self,
        state: DaemonState,
        worker: WorkerHandle,
        cid: int,
        pending: PendingCall,
        fmt: str,
        run_name: str | None,
        watch: bool,
    ) -> None:
        self._args = (state, worker, cid, pending, fmt, run_name)
        self._watch = watch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state, worker, cid, pending, fmt, run_name = self._args
        watcher = None
        if self._watch:
            watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, pending))
        try:
            try:
                header, body = await pending.next()
                if fmt == "none":  # a bare-JSON caller gets only the final value; output is kept for /logs
                    while not isinstance(header, FINAL) and header is not GONE:
                        if isinstance(header, Out) and run_name:
                            state.record_output(run_name, header.text)
                        header, body = await pending.next()
                    if isinstance(header, FINAL):
                        worker.forget(cid)
                        reply: Any = _simple_json(header, body)
                    else:
                        reply = None
                elif header is GONE:
                    reply = None
                else:
                    reply = _shape(state, worker, cid, pending, fmt, run_name, header, body)
            except Exception as exc:  # noqa: BLE001 - nothing is sent yet: answer with the error
                worker.cancel(cid)
                reply = reply_for_error(exc)
            except BaseException:
                worker.cancel(cid)
                raise
            if reply is None:  # the caller went away
                worker.cancel(cid)
                return
            await reply(scope, receive, send)
        finally:
            if watcher is not None:
                watcher.cancel()


async def _watch_disconnect(receive: Any, pending: PendingCall) -> None:
    """Until cancelled: when the client disconnects, end the relay waiting on ``pending``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            pending.push(GONE, None)
            return


async def _start_stream(send: Any, fmt: str) -> None:
    content_type = FRAMES_CONTENT_TYPE if fmt == "frames" else NDJSON_CONTENT_TYPE
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type.encode())]}
    )


def _chunk(fmt: str, header: Message, body: Any) -> bytes:
    """One worker message as a piece of a streamed reply: a frame, or an NDJSON line."""
    if fmt == "frames":
        return b"".join(_frame(header, body))
    return _envelope(header, body) + b"\n"


class Progress:
    """A streamed reply for slow daemon work (building an env): each line the work emits goes out
    as ``stdout`` at once; its return value ends the reply as ``config``, a runhouse error as
    ``exception`` with the error's type."""

    def __init__(self, work: Callable[[Callable[[str], None]], Awaitable[Any]], fmt: str) -> None:
        self.status = 200
        self._work = work
        self._fmt = fmt

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        queue: asyncio.Queue[tuple[Message, Any]] = asyncio.Queue()

        def emit(text: str) -> None:
            queue.put_nowait((Out(0, text), None))

        async def run() -> None:
            try:
                value = await self._work(emit)
                queue.put_nowait((Ok(0, value), None))
            except Exception as exc:  # noqa: BLE001 - reported to the caller by type
                info: ErrorInfo = {
                    "type": f"{type(exc).__module__}.{type(exc).__name__}",
                    "message": str(exc),
                    "traceback": "",
                    "pickled": None,
                }
                queue.put_nowait((Error(0, info), None))

        task = asyncio.get_running_loop().create_task(run())
        await _start_stream(send, self._fmt)
        try:
            while True:
                header, body = await queue.get()
                chunk = _chunk(self._fmt, header, body)
                final = isinstance(header, FINAL)
                await send({"type": "http.response.body", "body": chunk, "more_body": not final})
                if final:
                    return
        finally:
            await task


class _Watched(PendingCall):
    def __init__(self, inner: PendingCall, on_final: Callable[[FinalReply], None]) -> None:
        self._inner = inner
        self._on_final = on_final

    async def next(self) -> tuple[Message, Any]:
        header, body = await self._inner.next()
        if isinstance(header, FINAL):
            self._on_final(header)
        return header, body


class _Streamed:
    """A chunked reply relaying each worker message as it arrives."""

    def __init__(
        self,
        state: DaemonState,
        worker: WorkerHandle,
        cid: int,
        pending: PendingCall,
        fmt: str,
        run_name: str | None,
        header: Message,
        body: Any,
    ) -> None:
        self.status = 200
        self._args = (state, worker, cid, pending, fmt, run_name)
        self._first = (header, body)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state, worker, cid, pending, fmt, run_name = self._args
        header, body = self._first
        final = False
        try:
            await _start_stream(send, fmt)
            if run_name:
                state.running_runs.add(run_name)
            while header is not GONE:
                if isinstance(header, Out) and run_name:
                    state.record_output(run_name, header.text)
                chunk = _chunk(fmt, header, body)
                final = isinstance(header, FINAL)
                await send({"type": "http.response.body", "body": chunk, "more_body": not final})
                if final:
                    return
                header, body = await pending.next()
        finally:
            if final:
                worker.forget(cid)
            else:  # the caller went away, or sending failed: the call is of no use any more
                worker.cancel(cid)
            if run_name:
                state.running_runs.discard(run_name)
