"""Worker processes as seen from the daemon: spawning, the IPC channel, and crash handling.

A :class:`WorkerHandle` owns one worker process (one per env) and its channel. Requests and
replies are the records of :mod:`runhouse.protocol.messages`; a request carries a call id, and the
replies to it are routed to the :class:`PendingCall` waiting for that id. When the channel
closes unexpectedly (the user's code called ``os._exit``, segfaulted, or was OOM-killed) every
in-flight call fails with :class:`~runhouse.exceptions.WorkerDied` naming the worker, its pid and
how it ended; the daemon keeps serving the other workers, and the next deploy starts a fresh one.

A call whose caller went away is cancelled with :meth:`WorkerHandle.cancel`: the daemon stops
waiting for it (so it no longer counts as in flight, for status and autostop) and tells the worker,
which cancels or interrupts it. A call with a ``timeout`` is timed out by the worker; the daemon
also gives up by itself ``TIMEOUT_GRACE_S`` later, in case the worker cannot answer at all.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import psutil

from runhouse.exceptions import WorkerDied
from runhouse.protocol.ipc import Channel, open_channel
from runhouse.protocol.messages import (
    Call,
    Cancel,
    Error,
    ErrorInfo,
    Hello,
    ProtocolError,
    WorkerReply,
    WorkerRequest,
    cid_of,
    decode_reply,
)

log = logging.getLogger("runhouse.daemon")

DEFAULT_ENV = "default_env"
START_TIMEOUT_S = 60.0
TIMEOUT_GRACE_S = 5.0  # past a call's timeout, how long the daemon waits for the worker to say so


class Gone(NamedTuple):
    """Not a worker message: pushed to a PendingCall whose caller disconnected, to stop relaying."""

    cid: int = 0
    kind: Literal["gone"] = "gone"


GONE = Gone()
Message = WorkerReply | Gone  # what a PendingCall hands out
Build = Callable[[int], WorkerRequest]  # a request record, given its call id


class PendingCall:
    """Replies for one request, consumed in order by the route that sent it."""

    __slots__ = ("_items", "_waiter", "started", "notify", "deadline")

    def __init__(self) -> None:
        self._items: deque[tuple[Message, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.started = time.time()
        self.deadline: asyncio.TimerHandle | None = None  # the daemon's own bound on a timed call
        # called once, with no arguments, when the first reply arrives (the daemon's fast path)
        self.notify: Callable[[], None] | None = None

    def first(self) -> tuple[Message, Any]:
        """The earliest reply not yet taken (there must be one)."""
        return self._items[0]

    def take(self) -> tuple[Message, Any]:
        return self._items.popleft()

    def push(self, header: Message, body: Any) -> None:
        self._items.append((header, body))
        notify = self.notify
        if notify is not None:
            self.notify = None
            notify()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> tuple[Message, Any]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.popleft()


class WorkerHandle:
    """The daemon's side of one worker process."""

    def __init__(
        self,
        name: str,
        environ: dict[str, str],
        threads: int,
        on_exit: Callable[[WorkerHandle], None],
        python: str = sys.executable,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.environ = environ
        self.threads = threads
        self.python = python
        self.cwd = cwd
        self.pid: int | None = None
        self.node: str | None = None  # the address of the node it runs on, when not this machine
        self.alive = False
        self._on_exit = on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._pending: dict[int, PendingCall] = {}
        self._ids = itertools.count(1)
        self._hello: asyncio.Future[int] | None = None
        self._stopping = False

    async def start(self, log_path: str | None = None) -> None:
        ours, theirs = socket.socketpair()
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        log_start = out.tell() if log_path else 0  # type: ignore[union-attr]
        try:
            self._proc = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "runhouse.server.worker",
                    "--fd",
                    str(theirs.fileno()),
                    "--name",
                    self.name,
                    "--threads",
                    str(self.threads),
                ],
                pass_fds=[theirs.fileno()],
                env=self.environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
            )
        finally:
            theirs.close()
            if log_path:
                out.close()  # type: ignore[union-attr]
        self.pid = self._proc.pid
        await self._open(ours, lambda: _log_tail(log_path, log_start))

    async def _open(self, sock: socket.socket, log_tail: Callable[[], str]) -> None:
        """Serve the worker's end of the channel on ``sock`` and wait for its Hello."""
        self._hello = asyncio.get_running_loop().create_future()
        self._channel = await open_channel(sock, self._on_message, self._on_close)
        try:
            await asyncio.wait_for(asyncio.shield(self._hello), START_TIMEOUT_S)
        except asyncio.TimeoutError:
            await self.stop()
            raise WorkerDied(
                f"{self.describe()} did not start in {START_TIMEOUT_S:.0f}s" + log_tail()
            ) from None
        except WorkerDied:
            how = await self._exit_how()
            raise WorkerDied(
                f"{self.describe()} {how} before it started (python: {self.python})" + log_tail()
            ) from None
        self.alive = True
        log.info("%s started", self.describe())

    def describe(self) -> str:
        """The worker in messages: its env and pid (and node, for a worker on another node)."""
        return f"worker {self.name!r} (pid {self.pid})"

    # -- requests -----------------------------------------------------------------------
    def submit(self, build: Build, body: Any = None) -> tuple[int, PendingCall]:
        """Send the request ``build(cid)`` makes (e.g. ``lambda cid: Get(cid, key, "json")``); its
        replies arrive on the returned PendingCall."""
        if not self.alive or self._channel is None:
            raise WorkerDied(f"worker {self.name!r} is not running")
        cid = next(self._ids)
        msg = build(cid)
        pending = PendingCall()
        self._pending[cid] = pending
        self._channel.send(tuple(msg), body)  # messages.encode, inlined: the call path
        if type(msg) is Call:
            timeout = msg.options["timeout"]
            if timeout is not None:
                pending.deadline = asyncio.get_running_loop().call_later(
                    timeout + TIMEOUT_GRACE_S, self._expire, msg, timeout
                )
        return cid, pending

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def forget(self, cid: int) -> None:
        """The request is over (its final reply was taken): stop tracking it."""
        pending = self._pending.pop(cid, None)
        if pending is not None and pending.deadline is not None:
            pending.deadline.cancel()

    def cancel(self, cid: int) -> None:
        """The caller of call ``cid`` went away before its final reply: stop waiting for it and
        tell the worker to cancel it. Nothing happens for a request already forgotten."""
        pending = self._pending.pop(cid, None)
        if pending is None:
            return
        if pending.deadline is not None:
            pending.deadline.cancel()
        if self.alive and self._channel is not None:
            self._channel.send(tuple(Cancel(cid)), None)

    def _expire(self, call: Call, timeout: float) -> None:
        """A timed call the worker did not answer in time (its loop is blocked): give up on it."""
        cid = call.cid
        pending = self._pending.get(cid)
        if pending is None:
            return
        self.cancel(cid)
        target = call.key if call.method == "call" else f"{call.key}.{call.method}"
        message = (
            f"call to {target} timed out after {timeout:g} s; {self.describe()} did not "
            f"answer within {TIMEOUT_GRACE_S:g} s more, so the daemon gave up on it (the worker may be "
            "blocked by code running on its event loop)"
        )
        log.warning(message)
        info: ErrorInfo = {
            "type": "builtins.TimeoutError",
            "message": message,
            "traceback": "",
            "pickled": pickle.dumps(TimeoutError(message), protocol=5)
            if call.serialization == "pickle"
            else None,
            "http_status": 504,
        }
        pending.push(Error(cid, info), None)

    async def request(self, build: Build, body: Any = None) -> tuple[Message, Any]:
        """A request with one reply: returns ``(reply, body)``; error replies are returned too."""
        cid, pending = self.submit(build, body)
        try:
            return await pending.next()
        finally:
            self.forget(cid)

    # -- channel callbacks --------------------------------------------------------------
    def _on_message(self, header: Any, body: Any) -> None:
        try:
            msg = decode_reply(header)
        except ProtocolError as e:  # the request it answers (if it names one) fails with the reason
            log.error("%s: %s", self.describe(), e)
            cid = cid_of(header)
            pending = self._pending.get(cid) if cid is not None else None
            if pending is not None and cid is not None:
                info: ErrorInfo = {
                    "type": "runhouse.protocol.messages.ProtocolError",
                    "message": str(e),
                    "traceback": "",
                    "pickled": None,
                }
                pending.push(Error(cid, info), None)
            return
        if type(msg) is Hello:
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(msg.pid)
            return
        pending = self._pending.get(msg.cid)
        if pending is not None:
            pending.push(msg, body)

    def _on_close(self, exc: Exception | None) -> None:
        self.alive = False
        asyncio.get_running_loop().create_task(self._after_exit())

    async def _exit_how(self) -> str:
        """How the worker ended, for messages ("was killed by signal SIGKILL")."""
        code = await asyncio.get_running_loop().run_in_executor(None, self._wait_exit, 2.0)
        return _describe_exit(code)

    async def _after_exit(self) -> None:
        how = await self._exit_how()
        if not self._stopping:
            log.warning("%s %s", self.describe(), how)
        message = (
            f"{self.describe()} {how} while handling this call; "
            "its objects are gone, and the next deploy to this env starts a new worker"
        )
        info: ErrorInfo = {
            "type": "runhouse.exceptions.WorkerDied",
            "message": message,
            "traceback": "",
            "pickled": None,
            "status": 503,
            "worker_died": True,
        }
        for cid, pending in list(self._pending.items()):
            if pending.deadline is not None:
                pending.deadline.cancel()
            pending.push(Error(cid, info), None)
        self._pending.clear()
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(WorkerDied(message))
        self._on_exit(self)

    def _wait_exit(self, timeout: float) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- lifecycle and stats ------------------------------------------------------------
    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self.alive = False
        if self._channel is not None:
            self._channel.close()
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, self._wait_exit, timeout)
        if code is None and self._proc.poll() is None:
            self._proc.kill()
            await loop.run_in_executor(None, self._wait_exit, timeout)

    def stats(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "pid": self.pid,
            "alive": self.alive,
            "in_flight": len(self._pending),
            "node": self.node,
        }
        if self.pid is None:
            return info
        try:
            proc = psutil.Process(self.pid)
            with proc.oneshot():
                info["rss_mb"] = round(proc.memory_info().rss / 2**20, 1)
                info["cpu_percent"] = proc.cpu_percent(interval=None)
        except psutil.Error:
            pass
        return info


def _log_tail(log_path: str | None, start: int, limit: int = 4000) -> str:
    """The end of what a worker wrote to its log since ``start``, for an error message."""
    if not log_path:
        return ""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    text = text[-limit:].rstrip()
    return f"; the end of its log ({log_path}):\n{text}" if text else f"; its log ({log_path}) is empty"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "closed its connection"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
