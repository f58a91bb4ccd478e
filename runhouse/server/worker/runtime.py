"""The worker core: a dict of named objects and the calls running on them.

It is transport-agnostic: request records come in through :meth:`WorkerRuntime.on_message` and
reply records go out through the ``send(reply, body)`` callable it was given (an IPC channel to
the daemon today, which sends each record as a plain tuple, see :mod:`runhouse.protocol.messages`;
a Ray actor's calls for multi-node). Sync user code runs in a thread pool; coroutines and async
generators run on the event loop. Each call's prints and logs are captured separately (see
:mod:`capture`) and sent back as ``Out(cid, text)`` replies before its result.

Requests in (records of :mod:`runhouse.protocol.messages`; ``body`` carries serialized user data):

* ``Call(cid, key, method, serialization, options)`` + args payload (method ``__rh_map__``: a chunk
  of a map, the method run once per item, see :mod:`chunks`)
* ``Deploy(cid, key, spec, serialization)`` + pickled object or init args
* ``Put(cid, key, serialization)`` + payload, ``Get(cid, key, serialization)``
* ``Keys(cid)``, ``Delete(cid, keys)``, ``Rename(cid, old, new)``, ``Status(cid)``
* ``Cancel(cid)``: the call ``cid``'s caller went away; no reply

Anything else is refused with an ``Error`` reply naming what was expected.

A call is cancelled when its caller goes away or its ``options["timeout"]`` passes (then the caller
gets a ``TimeoutError``): a coroutine's task is cancelled, a sync call's thread is interrupted
(see :mod:`threads`), and the call leaves ``running`` at once; whatever it sends afterwards is
dropped. Object operations (get, put) have threads of their own, so stuck calls cannot block them.

Replies out: ``Out(cid, text)``, ``Item(cid, serialization)`` + payload,
``Result(cid, serialization, extra)`` + payload, ``Error(cid, info)``, ``End(cid)``,
``Ok(cid, value)``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from runhouse.protocol.errors import WireError
from runhouse.protocol.messages import (
    Call,
    Cancel,
    Delete,
    Deploy,
    End,
    Error,
    Get,
    Item,
    Keys,
    Ok,
    Out,
    Put,
    Rename,
    Result,
    Status,
    WorkerReply,
    WorkerRequest,
    cid_of,
    unknown_message,
)
from runhouse.protocol.serialization import deserialize, serialize_parts
from runhouse.protocol.shm import shm_dir
from runhouse.protocol.wire import GETATTR, MAP, SETATTR
from runhouse.server.worker.capture import OutputSink, current_sink
from runhouse.server.worker.chunks import map_call, map_method
from runhouse.server.worker.errors import CallError, error_info
from runhouse.server.worker.imports import resolve
from runhouse.server.worker.threads import CallCancelled, CallThreads, clear_interrupt, interrupt

Send = Callable[[WorkerReply, Any], None]  # (reply record, body)
OP_THREADS = 4  # for serializing objects in get/put, apart from the threads user calls run in


class WorkerRuntime:
    def __init__(self, name: str, send: Send, loop: asyncio.AbstractEventLoop, threads: int = 64) -> None:
        self.name = name
        self.objects: dict[str, Any] = {}
        self.running: dict[int, _Call] = {}
        self._send = send
        self._loop = loop
        self._threads = CallThreads(threads, name)
        self._ops = ThreadPoolExecutor(OP_THREADS, thread_name_prefix=f"rh-{name}-ops")
        self._attach_lock = threading.Lock()  # a call's thread and its interruption change under it
        self._speed: dict[tuple[str, str], _Speed] = {}
        self._shm_dir = shm_dir()
        # object operations by request type; each returns the Ok value or a _Reply
        self._handlers: dict[type[Any], Callable[[Any, Any], Awaitable[Any]]] = {
            Deploy: self._op_deploy,
            Put: self._op_put,
            Get: self._op_get,
            Keys: self._op_keys,
            Delete: self._op_delete,
            Rename: self._op_rename,
            Status: self._op_status,
        }

    # -- dispatch -----------------------------------------------------------------------
    def on_message(self, msg: WorkerRequest, body: Any) -> None:
        if type(msg) is Call:
            self._start_call(msg, body)
            return
        if type(msg) is Cancel:
            call = self.running.get(msg.cid)
            if call is not None:
                self._cancel(call)
            return
        op = self._handlers.get(type(msg))
        if op is None:
            self.refuse(msg, unknown_message(msg, "request"))
            return
        self._loop.create_task(self._run_op(op, msg, body))

    def refuse(self, header: Any, error: Exception) -> None:
        """Answer a message that is not a request this worker knows (it reaches no handler) with
        ``error``, if it names a call id to answer."""
        cid = cid_of(header)
        if cid is not None:
            self._send(Error(cid, error_info(error, False)), None)

    async def _run_op(self, op: Callable[[Any, Any], Awaitable[Any]], msg: WorkerRequest, body: Any) -> None:
        cid = msg.cid
        try:
            reply = await op(msg, body)
        except BaseException as e:  # noqa: BLE001 - every failure becomes an error reply
            info = error_info(e, with_pickle=True)
            if isinstance(msg, Deploy):  # the object could not be built from what was sent
                info.setdefault("http_status", 422)
            self._send(Error(cid, info), None)
            return
        if type(reply) is _Reply:  # the reply is built already
            self._send(reply.msg, reply.body)
        else:
            self._send(Ok(cid, reply), None)

    # -- calls --------------------------------------------------------------------------
    def _start_call(self, msg: Call, body: Any) -> None:
        cid, key, method, ser, opts, _ = msg
        shm = self._shm_dir if opts["shm"] else None
        try:
            if method == MAP:  # a chunk of a map: the method runs once per item (see chunks.py)
                args, kwargs = _decode_args(body, ser, shm)
                inner = map_method(args)
                fn, args = map_call(self._resolve(key, inner), args, kwargs, ser == "pickle")
                kwargs, speed_key = {}, (key, f"{MAP}{inner}")
            else:
                fn = self._resolve(key, method)
                args, kwargs = _decode_args(body, ser, shm)
                speed_key = (key, method)
        except BaseException as e:  # noqa: BLE001
            self._send(Error(cid, error_info(e, ser == "pickle")), None)
            return
        sink = None
        if opts["stream_logs"]:
            sink = OutputSink(self._loop, functools.partial(self._send_output, cid))
        ctx = contextvars.copy_context()
        if sink is not None:
            ctx.run(current_sink.set, sink)
        if shm is not None:
            ctx.run(_shm.set, shm)
        call = self.running[cid] = _Call(cid, key, method, ser, sink)
        timeout = opts["timeout"]
        if timeout is not None:
            call.timer = self._loop.call_later(timeout, self._time_out, call, timeout)
        store_as = opts["run_name"] if opts["remote"] else None
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            call.task = self._loop.create_task(self._run_async(call, fn, args, kwargs, store_as), context=ctx)
            return
        speed = self._speed.get(speed_key)
        if speed is None:
            speed = self._speed[speed_key] = _Speed()
        if speed.inline and timeout is None:  # a call with a timeout must not hold the loop
            ctx.run(self._run_inline, speed, call, fn, args, kwargs, store_as)
        else:
            self._threads.submit(ctx.run, self._run_sync, call, fn, args, kwargs, store_as, speed)

    def _resolve(self, key: str, method: str) -> Callable[..., Any]:
        try:
            obj = self.objects[key]
        except KeyError:
            raise CallError(f"no object named {key!r} in worker {self.name!r}", 404) from None
        if method == GETATTR:
            return functools.partial(_get_attribute, obj)
        if method == SETATTR:
            return functools.partial(_set_attribute, obj)
        if method == "call" and not hasattr(obj, "call"):
            if not callable(obj):
                raise CallError(f"object {key!r} ({type(obj).__name__}) is not callable", 400)
            return obj
        if method.startswith("_"):
            raise CallError(f"method {method!r} of {key!r} is private; only public names can be called", 403)
        try:
            attr = getattr(obj, method)
        except AttributeError:
            raise CallError(
                f"object {key!r} ({type(obj).__name__}) has no method or attribute {method!r}", 404
            ) from None
        if callable(attr):
            return attr

        def read_attribute() -> Any:
            return attr

        return read_attribute

    def _run_inline(
        self,
        speed: _Speed,
        call: _Call,
        fn: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        store_as: str | None,
    ) -> None:
        """Run a callable known to be quick on the loop thread, saving two thread switches."""
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            if inspect.isgenerator(result) or inspect.isawaitable(result):
                speed.demote()  # needs the general path; finish this one there
                self._threads.submit(
                    contextvars.copy_context().run, self._run_sync, call, _returning(result), (), {}, store_as
                )
                return
            reply = self._result_reply(call.cid, result, call.ser, store_as)
        except BaseException as e:  # noqa: BLE001
            reply = Error(call.cid, error_info(e, call.ser == "pickle")), None
        speed.observe_inline(time.perf_counter() - start)
        self._reply(call, reply[0], reply[1], True)

    def _run_sync(
        self,
        call: _Call,
        fn: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        store_as: str | None,
        speed: _Speed | None = None,
    ) -> None:
        """Runs in a pool thread; hands the reply to the loop."""
        if not self._attach(call):
            return  # cancelled while it waited for a thread
        try:
            reply = self._produce(call, fn, args, kwargs, store_as, speed)
        finally:
            self._detach(call)
        self._loop.call_soon_threadsafe(self._reply, call, reply[0], reply[1], True)

    def _produce(
        self,
        call: _Call,
        fn: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        store_as: str | None,
        speed: _Speed | None,
    ) -> tuple[WorkerReply, Any]:
        """In a pool thread: run the call, await or iterate its result as needed; the final reply."""
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            if speed is not None:
                speed.observe_thread(time.perf_counter() - start, inspect.isgenerator(result))
            if inspect.isawaitable(result):
                future = asyncio.run_coroutine_threadsafe(_await(result), self._loop)
                call.task = future  # cancelling the call cancels what it awaits
                result = future.result()
            if inspect.isgenerator(result) and store_as is None:
                post, ser = self._loop.call_soon_threadsafe, call.ser
                for item in result:
                    post(self._reply, call, Item(call.cid, ser), serialize_parts(item, ser, _shm.get()))
                return End(call.cid), None
            return self._result_reply(call.cid, result, call.ser, store_as)
        except BaseException as e:  # noqa: BLE001
            return Error(call.cid, error_info(e, call.ser == "pickle")), None

    async def _run_async(
        self,
        call: _Call,
        fn: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        store_as: str | None,
    ) -> None:
        cid, ser = call.cid, call.ser
        try:
            if inspect.isasyncgenfunction(fn) and store_as is None:
                async for item in fn(*args, **kwargs):
                    self._reply(call, Item(cid, ser), serialize_parts(item, ser, _shm.get()))
                self._reply(call, End(cid), None, True)
                return
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            reply = self._result_reply(cid, result, ser, store_as)
        except BaseException as e:  # noqa: BLE001 - cancellation included: its reply is dropped
            reply = Error(cid, error_info(e, ser == "pickle")), None
        self._reply(call, reply[0], reply[1], True)

    def _result_reply(self, cid: int, result: Any, ser: str, store_as: str | None) -> tuple[WorkerReply, Any]:
        if store_as is not None:
            self.objects[store_as] = result
            ref = {"key": store_as, "type": type(result).__name__}
            return Result(cid, ser, {"stored_key": store_as}), serialize_parts(ref, ser, _shm.get())
        return Result(cid, ser, None), serialize_parts(result, ser, _shm.get())

    def _send_output(self, cid: int, text: str) -> None:
        self._send(Out(cid, text), None)

    def _reply(self, call: _Call, header: WorkerReply, body: Any, final: bool = False) -> None:
        if call.done:
            return  # cancelled or timed out: nobody waits for it
        sink = call.sink
        if sink is not None:
            sink.flush()
        if final:
            self._end(call)
        self._send(header, body)

    def _end(self, call: _Call) -> None:
        """The call is over for its caller: it leaves ``running`` and sends nothing more."""
        call.done = True
        self.running.pop(call.cid, None)
        if call.timer is not None:
            call.timer.cancel()
        if call.sink is not None:
            call.sink.closed = True

    # -- cancelling ---------------------------------------------------------------------------
    def _time_out(self, call: _Call, seconds: float) -> None:
        if call.done:
            return
        target = call.key if call.method == "call" else f"{call.key}.{call.method}"
        error = TimeoutError(
            f"call to {target} timed out after {seconds:g} s on the cluster and was cancelled"
        )
        info = error_info(error, call.ser == "pickle")
        info["http_status"] = 504  # for JSON callers; frames callers get the TimeoutError itself
        self._reply(call, Error(call.cid, info), None, True)
        self._cancel(call)

    def _cancel(self, call: _Call) -> None:
        """Stop a call nobody waits for: cancel its task, interrupt its thread."""
        if not call.done:
            self._end(call)
        if call.task is not None:
            call.task.cancel()
        with self._attach_lock:
            thread = call.thread
            if thread is None or call.interrupted:
                return  # not started (it never will) or already over
            call.interrupted = True
            interrupt(thread)
        self._threads.abandon(thread)  # given back when the thread returns, if it ever does

    def _attach(self, call: _Call) -> bool:
        """In the call's thread, before it runs: whether to run it (it may be cancelled already)."""
        with self._attach_lock:
            if call.done:
                return False
            call.thread = threading.get_ident()
            return True

    def _detach(self, call: _Call) -> None:
        """In the call's thread, after it ran: no interrupt may reach whatever the thread runs next."""
        while True:
            try:
                with self._attach_lock:
                    call.thread = None
                    if call.interrupted:
                        clear_interrupt(threading.get_ident())
                return
            except CallCancelled:  # the interrupt landed here rather than in the call: done with it
                continue

    # -- object operations --------------------------------------------------------------
    async def _op_deploy(self, msg: Deploy, body: Any) -> Any:
        cid, key, spec, ser, _ = msg
        if spec.get("kind") == "instance":
            cls = self.objects.get(spec["class_key"]) or resolve(spec["class"], None)
            args, kwargs = _decode_args(body, ser)
            sink = None
            if spec.get("stream_logs", True):
                sink = OutputSink(self._loop, functools.partial(self._send_output, cid))
            ctx = contextvars.copy_context()
            if sink is not None:
                ctx.run(current_sink.set, sink)
            obj = await self._threads.future(self._loop, ctx.run, lambda: cls(*args, **kwargs))
            if sink is not None:
                sink.flush()
                sink.closed = True
        else:
            obj = resolve(spec, body)
        self.objects[key] = obj
        return {"key": key, "type": type(obj).__name__, "pid": os.getpid()}

    async def _op_put(self, msg: Put, body: Any) -> Any:
        self.objects[msg.key] = await self._in_thread(deserialize, body or b"", msg.serialization)
        return msg.key

    async def _op_get(self, msg: Get, body: Any) -> Any:
        key, ser = msg.key, msg.serialization
        if key not in self.objects:
            raise CallError(f"no object named {key!r} in worker {self.name!r}", 404)
        data = await self._in_thread(serialize_parts, self.objects[key], ser)
        return _Reply(Result(msg.cid, ser, None), data)

    async def _op_keys(self, msg: Keys, body: Any) -> Any:
        return list(self.objects)

    async def _op_delete(self, msg: Delete, body: Any) -> Any:
        return [k for k in msg.keys if self.objects.pop(k, _MISSING) is not _MISSING]

    async def _op_rename(self, msg: Rename, body: Any) -> Any:
        old, new = msg.old, msg.new
        if old not in self.objects:
            raise CallError(f"no object named {old!r} in worker {self.name!r}", 404)
        self.objects[new] = self.objects.pop(old)
        return new

    async def _op_status(self, msg: Status, body: Any) -> Any:
        now = time.time()
        return {
            "pid": os.getpid(),
            "objects": {k: type(v).__name__ for k, v in self.objects.items()},
            "running": [
                {"key": c.key, "method": c.method, "seconds": round(now - c.started, 3)}
                for c in self.running.values()
            ],
            "threads": self._threads.stats(),
        }

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Object operations run in threads of their own: calls stuck in user code cannot starve them."""
        return await self._loop.run_in_executor(self._ops, fn, *args)

    def shutdown(self) -> None:
        self._threads.shutdown()
        self._ops.shutdown(wait=False, cancel_futures=True)


class _Call:
    """One call in flight: what status shows of it, and what cancelling it needs."""

    __slots__ = (
        "cid",
        "key",
        "method",
        "ser",
        "sink",
        "started",
        "task",
        "thread",
        "timer",
        "interrupted",
        "done",
    )

    def __init__(self, cid: int, key: str, method: str, ser: str, sink: OutputSink | None) -> None:
        self.cid = cid
        self.key = key
        self.method = method
        self.ser = ser
        self.sink = sink
        self.started = time.time()
        self.task: Any = None  # an asyncio task or a concurrent future: what cancelling it cancels
        self.thread: int | None = None  # the pool thread running it, while it runs
        self.timer: asyncio.TimerHandle | None = None
        self.interrupted = False
        self.done = False  # its final reply is sent (or it was cancelled): it sends nothing more


class _Reply(NamedTuple):
    """An object operation's reply when it is not ``Ok(value)``."""

    msg: WorkerReply
    body: Any


_MISSING = object()
# The shared-memory folder for the running call's large results (set for same-host callers).
_shm: contextvars.ContextVar[Path | None] = contextvars.ContextVar("rh_shm", default=None)


class _Speed:
    """How quickly one method has run, to decide whether it may run on the loop thread.

    A sync method runs in the thread pool until it has finished ``PROMOTE_AFTER`` times in a row
    in under ``FAST_S``; then it runs inline, which saves two thread switches per call. An inline
    run slower than ``SLOW_S`` is a strike; ``STRIKES`` strikes within ``STRIKE_WINDOW`` inline
    runs (or a generator or awaitable result) send it back to the pool for good. So a method that
    blocks holds up other calls at most a few times, while one that is fast but once in a long
    while is descheduled by a busy machine (a pause of a few ms) keeps its place.
    """

    PROMOTE_AFTER = 16
    FAST_S = 0.0005
    SLOW_S = 0.002
    STRIKES = 3
    STRIKE_WINDOW = 1000
    __slots__ = ("inline", "streak", "demoted", "strikes", "since_strike")

    def __init__(self) -> None:
        self.inline = False
        self.streak = 0
        self.demoted = False
        self.strikes = 0
        self.since_strike = 0

    def observe_thread(self, seconds: float, streams: bool) -> None:
        if self.demoted or streams or seconds > self.FAST_S:
            self.streak = 0
            self.demoted = self.demoted or streams
            return
        self.streak += 1
        if self.streak >= self.PROMOTE_AFTER:
            self.inline = True

    def observe_inline(self, seconds: float) -> None:
        if seconds <= self.SLOW_S:
            if self.strikes:
                self.since_strike += 1
                if self.since_strike >= self.STRIKE_WINDOW:
                    self.strikes = self.since_strike = 0
            return
        self.strikes += 1
        self.since_strike = 0
        if self.strikes >= self.STRIKES:
            self.demote()

    def demote(self) -> None:
        self.inline = False
        self.demoted = True


def _get_attribute(obj: Any, name: Any) -> Any:
    if not isinstance(name, str):
        raise CallError(f"an attribute name must be a string, not {type(name).__name__}", 400)
    return getattr(obj, name)


def _set_attribute(obj: Any, name: Any, value: Any) -> None:
    if not isinstance(name, str):
        raise CallError(f"an attribute name must be a string, not {type(name).__name__}", 400)
    setattr(obj, name, value)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _returning(value: Any) -> Callable[[], Any]:
    return lambda: value


def _decode_args(body: Any, ser: str, shm: Path | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Call arguments from a request body; malformed input is the caller's error (400)."""
    try:
        payload = deserialize(body, ser, shm) if body else {}
    except WireError as e:
        raise CallError(str(e), 400) from None
    return _split_args(payload)


def _split_args(payload: Any) -> tuple[list[Any], dict[str, Any]]:
    if payload is None:
        return [], {}
    if not isinstance(payload, dict):
        raise CallError('call data must be {"args": [...], "kwargs": {...}}', 400)
    args = payload.get("args") or []
    kwargs = payload.get("kwargs") or {}
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise CallError('call data must be {"args": [...], "kwargs": {...}}', 400)
    return list(args), kwargs
