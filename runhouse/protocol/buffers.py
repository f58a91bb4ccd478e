"""Large receive buffers, kept for reuse while large messages keep coming.

Receiving a 100 MB body into a new ``bytearray`` costs more than receiving it: the kernel must
find, zero and map 25,000 fresh pages (about 60 ms on the 2-core test VM, against 13 ms to copy
100 MB into memory already mapped). A process that receives one large array after another (a
worker fed batches, the daemon relaying a placed worker's replies) can use the same pages again,
once nothing refers to the previous body any more. So can a client that receives one large
result after another and drops the one before (``result = fn(batch)`` in a loop).

:class:`BufferPool` keeps the last few large buffers it handed out. A buffer is free again when
the pool holds the only reference to it: an array unpickled out of it, a ``memoryview`` of it or
a transport still writing it all hold references (CPython counts them), so a buffer in use is
never handed out twice. Buffers are reused only at their exact size (a message's body must be
exactly its length) and dropped after :attr:`idle_s` without a large message, so an idle process
goes back to its idle memory.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

MIN_BYTES = 1 << 20  # smaller bodies are cheap to allocate: not pooled
KEEP_BYTES = 512 << 20  # at most this much kept for reuse
KEEP_COUNT = 4
IDLE_S = 2.0


class IdleTimer:
    """A timer thread, one at a time, calling ``trim`` once ``last_use`` is ``idle_s`` old."""

    def __init__(self, idle_s: float, clock: Callable[[], float]) -> None:
        self.idle_s = idle_s
        self.clock = clock
        self.last_use = 0.0
        self._timer: threading.Timer | None = None
        self._guard = threading.Lock()

    def touch(self, trim: Callable[[], bool]) -> None:
        self.last_use = self.clock()
        with self._guard:
            if self._timer is None:
                self._start(self.idle_s, trim)

    def _start(self, wait: float, trim: Callable[[], bool]) -> None:
        self._timer = threading.Timer(wait, self._tick, (trim,))
        self._timer.daemon = True
        self._timer.start()

    def _tick(self, trim: Callable[[], bool]) -> None:
        idle_for = self.clock() - self.last_use
        with self._guard:
            self._timer = None
            if idle_for < self.idle_s:
                self._start(self.idle_s - idle_for, trim)
                return
        if trim():  # something is still held: look again later
            with self._guard:
                if self._timer is None:
                    self._start(self.idle_s, trim)


class BufferPool:
    """``take(n)``: a ``bytearray`` of exactly ``n`` bytes whose contents are undefined."""

    def __init__(
        self,
        keep_bytes: int = KEEP_BYTES,
        keep_count: int = KEEP_COUNT,
        idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_bytes = keep_bytes
        self.keep_count = keep_count
        self.idle_s = idle_s
        self._clock = clock
        self._bufs: list[bytearray] = []  # oldest first
        self._used: list[float] = []  # when each was last handed out
        self._lock = threading.Lock()
        self.reused = 0  # how many takes were served without a new allocation (tests, benches)
        self._idle = IdleTimer(idle_s, clock)

    def take(self, size: int) -> bytearray:
        if size < MIN_BYTES:
            return bytearray(size)
        with self._lock:
            now = self._clock()
            bufs = self._bufs
            for i in range(len(bufs)):
                # Free: referenced only by the list and getrefcount's own argument.
                if len(bufs[i]) == size and sys.getrefcount(bufs[i]) == 2:
                    buf = bufs.pop(i)
                    del self._used[i]
                    bufs.append(buf)
                    self._used.append(now)
                    self.reused += 1
                    return buf
            buf = bytearray(size)
            if size <= self.keep_bytes:
                bufs.append(buf)
                self._used.append(now)
                self._evict()
            return buf

    def _evict(self) -> None:
        """Drop the oldest buffers past the count or byte cap (whether or not they are in use:
        dropping the pool's reference never frees memory someone still uses)."""
        bufs = self._bufs
        while len(bufs) > self.keep_count or sum(map(len, bufs)) > self.keep_bytes:
            del bufs[0]
            del self._used[0]

    def trim(self) -> None:
        """Drop the buffers not handed out in the last :attr:`idle_s` seconds."""
        with self._lock:
            cutoff = self._clock() - self.idle_s
            keep = [i for i, used in enumerate(self._used) if used > cutoff]
            self._bufs = [self._bufs[i] for i in keep]
            self._used = [self._used[i] for i in keep]

    def trim_soon(self) -> None:
        """Have a timer thread (one at a time) trim the pool once large takes stop; called after
        each large take, by the daemon and workers and by the sync client alike."""
        self._idle.touch(self._trim_all)

    def _trim_all(self) -> bool:
        self.trim()
        return False

    def held(self) -> int:
        """Bytes the pool keeps (in use or not)."""
        with self._lock:
            return sum(map(len, self._bufs))


POOL = BufferPool()  # one per process: every channel of the process shares it
