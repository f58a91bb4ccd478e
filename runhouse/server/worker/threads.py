"""Threads for a worker's sync user code: a pool whose calls can be interrupted and abandoned.

A cancelled call's thread is interrupted with an asynchronous exception, :class:`CallCancelled`,
which Python raises in that thread at the next bytecode it runs (as ``KeyboardInterrupt`` is in
the main thread). A thread blocked in C (``time.sleep(10**6)``, ``threading.Event().wait()``, a
socket read) is not running bytecode and cannot be interrupted that way: it keeps its thread until
the C call returns. The pool counts such a thread as *abandoned* and grows past its size by one
thread for each (up to ``max_extra``), so calls stuck for good never starve new ones; when an
abandoned thread comes back, the pool shrinks to its size again.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("runhouse.worker")


class CallCancelled(BaseException):
    """Raised inside a sync call's thread when its caller went away or its timeout passed.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that user code's ``except Exception`` does
    not swallow it; ``finally`` blocks and ``with`` exits still run."""


# Our own prototypes: ctypes.pythonapi's shared function objects may carry other code's argtypes.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


def interrupt(thread_id: int) -> bool:
    """Schedule :class:`CallCancelled` in the thread ``thread_id``; False if there is no such thread."""
    return _set_async_exc(thread_id, CallCancelled) == 1


def clear_interrupt(thread_id: int) -> None:
    """Drop an interrupt scheduled for ``thread_id`` that has not been raised yet."""
    _clear_async_exc(thread_id, None)


class CallThreads:
    """A thread pool of ``size`` threads, plus one for each abandoned thread (see the module doc).

    Threads start on demand and then wait for work; ``submit`` never blocks.
    """

    def __init__(self, size: int, name: str, max_extra: int | None = None) -> None:
        self.size = size
        self.max_extra = max(4 * size, 256) if max_extra is None else max_extra
        self._name = name
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._threads = 0  # alive
        self._free = 0  # alive and not running work (waiting, or started and about to take some)
        self._abandoned: set[int] = set()
        self._started = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._queue.append((fn, args))
            if self._free:
                self._work_ready.notify()
            self._add_threads()

    def future(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` in the pool; its outcome arrives on ``loop`` as a future."""
        fut = loop.create_future()

        def work() -> None:
            try:
                result = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, fut, None, e)
            else:
                loop.call_soon_threadsafe(_settle, fut, result, None)

        self.submit(work)
        return fut

    def abandon(self, thread_id: int) -> None:
        """``thread_id`` runs a cancelled call that may never return: let another thread take its place."""
        with self._lock:
            self._abandoned.add(thread_id)
            self._add_threads()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "size": self.size,
                "threads": self._threads,
                "busy": self._threads - self._free,
                "abandoned": len(self._abandoned),
                "queued": len(self._queue),
            }

    def shutdown(self) -> None:
        """Let idle threads end; threads still running user code are left to the process's exit."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._work_ready.notify_all()

    # -- internals (called with the lock held) ----------------------------------------------------------
    def _limit(self) -> int:
        return self.size + min(len(self._abandoned), self.max_extra)

    def _add_threads(self) -> None:
        while len(self._queue) > self._free and self._threads < self._limit() and not self._closed:
            self._threads += 1
            self._free += 1
            self._started += 1
            thread = threading.Thread(target=self._work, name=f"rh-{self._name}_{self._started}", daemon=True)
            thread.start()

    def _work(self) -> None:
        me = threading.get_ident()
        lock = self._lock
        while True:
            with lock:
                while not self._queue:
                    if self._closed:
                        self._threads -= 1
                        self._free -= 1
                        return
                    self._work_ready.wait()
                fn, args = self._queue.popleft()
                self._free -= 1
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - work reports its own errors; keep the thread
                log.exception("work in thread %s failed", threading.current_thread().name)
            fn = args = None  # type: ignore[assignment]  # drop references before waiting
            with lock:
                self._abandoned.discard(me)
                if self._threads > self._limit():
                    self._threads -= 1  # an extra thread whose abandoned peer came back
                    return
                self._free += 1


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
