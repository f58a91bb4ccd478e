"""Per-call capture of ``print`` and ``logging`` output inside a worker.

``sys.stdout`` and ``sys.stderr`` are replaced by :class:`RoutedStream` objects that write to the
sink of the call running in the current context (a :mod:`contextvars` variable, so concurrent
calls in threads or tasks each get their own output), or to the real stream when no call is
capturing. A sink buffers text and flushes it to the daemon once per event-loop turn, so a burst
of prints becomes one message, and a call that prints nothing costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

current_sink: contextvars.ContextVar[OutputSink | None] = contextvars.ContextVar(
    "rh_output_sink", default=None
)


class OutputSink:
    """Collects one call's output and hands it to ``emit(text)`` on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, emit: Callable[[str], None]) -> None:
        self._loop = loop
        self._emit = emit
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self.closed = False

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._parts.append(text)
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop closed while the worker shuts down
            self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """Send what was buffered (runs on the loop; call it before the final reply)."""
        with self._lock:
            parts, self._parts = self._parts, []
            self._scheduled = False
        if parts and not self.closed:
            self._emit("".join(parts))


class RoutedStream:
    """A text stream that writes to the current call's sink, else to the original stream."""

    def __init__(self, original: TextIO) -> None:
        self._original = original

    def write(self, text: str) -> int:
        sink = current_sink.get()
        if sink is None:
            return self._original.write(text)
        sink.write(text)
        return len(text)

    def flush(self) -> None:
        if current_sink.get() is None:
            self._original.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ... of the real stream
        return getattr(self._original, name)


class _SinkHandler(logging.Handler):
    """Sends log records of a capturing call to its sink; others go to the real stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
        except Exception:  # a bad format string in user code must not kill the call
            self.handleError(record)
            return
        sink = current_sink.get()
        if sink is not None:
            sink.write(text)
        else:
            sys.__stderr__.write(text) if sys.__stderr__ else None


def install() -> None:
    """Route this process's stdout, stderr and root logging through the per-call sinks."""
    sys.stdout = RoutedStream(sys.__stdout__ or sys.stdout)
    sys.stderr = RoutedStream(sys.__stderr__ or sys.stderr)
    handler = _SinkHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s | %(name)s | %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
