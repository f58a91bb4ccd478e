"""Same-host shared memory that stays mapped and is used again: segments owned by their writer.

:mod:`runhouse.protocol.shm` once wrote every large buffer to a new file in ``/dev/shm`` and the
receiver unlinked it after mapping it. Each new file costs the kernel 25,000 fresh pages per
100 MB (about 60 ms on the 2-core test VM) and the receiver's first touch of each page a fault,
against 13 ms to copy 100 MB into pages already mapped. Ray's object store is fast on one node
because its processes map the store once and its pages stay in place; this module does the same
for our two kinds of writers (a client's arguments, a worker's results).

* A writer's :class:`Outbox` owns its segment files (``blk-<pid>-<random>``), keeps each mapped,
  and copies a buffer into a free one of a fitting size (or a new one). The first page of a
  segment is its header: byte 0 says whether a reader has taken it; the data starts at
  :data:`HEADER`, page-aligned.
* A reader's :class:`Inbox` maps a segment once and keeps the mapping; it takes a shared
  ``flock`` on the file and sets the header's taken byte before handing out a view of the data.
  When nothing refers to that mapping any more (CPython's reference count: an array unpickled over
  the view, or any view of it, holds it), the reader drops its lock.
* A writer uses a segment again only when its taken byte is set and an exclusive ``flock`` test
  succeeds, that is: its reader took it and has let it go. A reader that dies loses its locks with
  it. A segment sent but never taken is not used again, nor dropped while its reader may still
  come: it goes when the writer learns its call ended (:meth:`Outbox.settle`), or after
  :data:`STUCK_S` (as unread segments always were swept).
* Both sides forget what they have not used for :data:`IDLE_S` (a timer thread), so an idle
  process holds no segments; files of dead writers are removed by the daemon's sweep.

The folder is the user's own 0700 ``/dev/shm/rh-<uid>`` (:func:`runhouse.protocol.shm.shm_dir`),
and only same-user callers on the same host (their host ids match) use shared memory at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import re
import secrets
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from runhouse.protocol.buffers import IdleTimer
from runhouse.protocol.shm import map_segment

HEADER = mmap.PAGESIZE  # the first page: the taken byte; data starts page-aligned after it
PREFIX = "blk-"
KEEP_BYTES = 1 << 30  # an outbox keeps at most this much (in use or free)
KEEP_COUNT = 8
IDLE_S = 2.0
STUCK_S = 600.0  # a segment sent and never taken is dropped after this long (a call may wait in a queue)
_NAME = re.compile(r"^blk-(\d+)-[0-9a-f]{16}$")


def is_segment(name: str) -> bool:
    return name.startswith(PREFIX)


def read_segment(folder: Path, name: str, length: int) -> memoryview:
    """The data of segment ``name``: a reusable one through this process's inbox, an old-style
    ``seg-*`` file (a client of an earlier version) mapped and unlinked as before."""
    return inbox(folder).map(name, length) if is_segment(name) else map_segment(folder, name, length)


class _Out:
    __slots__ = ("name", "fd", "map", "size", "sent_at", "in_flight", "used")

    def __init__(self, name: str, fd: int, mapped: mmap.mmap, size: int) -> None:
        self.name, self.fd, self.map, self.size = name, fd, mapped, size
        self.sent_at = self.used = 0.0
        self.in_flight = False


class Outbox:
    """A writer's segments. ``write(view)`` returns the name of a segment holding ``view``."""

    def __init__(
        self,
        folder: Path,
        keep_bytes: int = KEEP_BYTES,
        keep_count: int = KEEP_COUNT,
        idle_s: float = IDLE_S,
        stuck_s: float = STUCK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.keep_bytes, self.keep_count, self.stuck_s = keep_bytes, keep_count, stuck_s
        self._clock = clock
        self._files: list[_Out] = []  # least recently used first
        self._lock = threading.Lock()
        self._idle = IdleTimer(idle_s, clock)
        self.reused = 0  # writes into a segment written before (tests, benches)
        self.created = 0

    def write(self, data: memoryview) -> str:
        view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        n = view.nbytes
        with self._lock:
            out = self._free(n)
            if out is None:
                out = self._create(n)
            else:
                self.reused += 1
            out.map[0] = 0  # not taken
            out.map[HEADER : HEADER + n] = view
            out.in_flight, out.sent_at = True, self._clock()
            out.used = out.sent_at
            self._files.remove(out)
            self._files.append(out)
            self._evict()
        self._idle.touch(self.trim)
        return out.name

    def _free(self, n: int) -> _Out | None:
        best: _Out | None = None
        for out in self._files:
            if n <= out.size <= 2 * n and (best is None or out.size < best.size) and self._reusable(out):
                best = out
        return best

    def _reusable(self, out: _Out) -> bool:
        if self._pending(out):
            return False
        try:  # no reader holds it: it took it and let it go (or died)
            fcntl.flock(out.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(out.fd, fcntl.LOCK_UN)
        out.in_flight = False
        return True

    def _create(self, n: int) -> _Out:
        size = -(-n // HEADER) * HEADER  # whole pages
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Reserve the pages now: /dev/shm being full is an OSError here (the caller falls back
            # to sending inline), never a SIGBUS on a later write into the mapping.
            os.posix_fallocate(fd, 0, HEADER + size)
            mapped = mmap.mmap(fd, HEADER + size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.folder / name)
            raise
        out = _Out(name, fd, mapped, size)
        self._files.append(out)
        self.created += 1
        return out

    def _drop(self, out: _Out) -> None:
        """Forget a segment: its file goes (a reader's mapping keeps its pages until it lets go)."""
        self._files.remove(out)
        with contextlib.suppress(OSError):
            os.unlink(self.folder / out.name)
        with contextlib.suppress(BufferError):
            out.map.close()
        os.close(out.fd)

    @staticmethod
    def _pending(out: _Out) -> bool:
        """Sent and not taken yet: its reader may still come, so the file must stay."""
        return out.in_flight and out.map[0] != 1

    def _evict(self) -> None:
        """Past the caps, drop the least recently written segments that are not pending (a taken
        one's reader keeps its pages mapped); pending ones go only after ``stuck_s``."""
        now = self._clock()
        for out in list(self._files):
            if self._pending(out) and now - out.sent_at > self.stuck_s:
                self._drop(out)
        for out in list(self._files):
            if len(self._files) <= self.keep_count and sum(o.size for o in self._files) <= self.keep_bytes:
                break
            if not self._pending(out):
                self._drop(out)

    def settle(self, name: str) -> None:
        """The call that carried segment ``name`` is over. Not taken: nobody will read it now, so
        its file goes (as an unread segment always did); taken: its reader's lock decides."""
        with self._lock:
            for out in self._files:
                if out.name == name:
                    if out.map[0] != 1:
                        self._drop(out)
                    return

    def trim(self) -> bool:
        """Drop segments not written for the idle time (pending ones stay); whether any are left."""
        with self._lock:
            cutoff = self._clock() - self._idle.idle_s
            for out in list(self._files):
                if out.used <= cutoff and not self._pending(out):
                    self._drop(out)
            self._evict()
            return bool(self._files)

    def held(self) -> int:
        with self._lock:
            return sum(out.size for out in self._files)


class _In:
    __slots__ = ("fd", "map", "size", "locked", "used", "forked")

    def __init__(self, fd: int, mapped: mmap.mmap, size: int) -> None:
        self.fd, self.map, self.size = fd, mapped, size
        self.locked = False
        self.used = 0.0
        self.forked = False  # locked when this process forked: a child shares the lock


class Inbox:
    """A reader's mapped segments. ``map(name, length)`` is a writable view of the data."""

    def __init__(
        self, folder: Path, idle_s: float = IDLE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.folder = folder
        self._clock = clock
        self._maps: dict[str, _In] = {}
        self._lock = threading.Lock()
        self._idle = IdleTimer(idle_s, clock)
        self.remapped = 0  # segments mapped before, used again (tests, benches)
        _ALL_INBOXES.add(self)

    def map(self, name: str, length: int) -> memoryview:
        if not _NAME.match(name):
            raise ValueError(f"bad shared-memory segment name {name!r}")
        with self._lock:
            self._release()
            entry = self._maps.get(name)
            if entry is None:
                entry = self._open(name)
            else:
                self.remapped += 1
            if HEADER + length > len(entry.map):
                raise ValueError(f"shared-memory segment {name} is smaller than its payload")
            if not entry.locked:
                fcntl.flock(entry.fd, fcntl.LOCK_SH)  # waits out a writer's momentary test
                entry.locked = True
            entry.map[0] = 1  # taken: its writer may use it again once this lock goes
            entry.used = self._clock()
            view = memoryview(entry.map)[HEADER : HEADER + length]
        self._idle.touch(self.trim)
        return view

    def _open(self, name: str) -> _In:
        fd = os.open(self.folder / name, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size <= HEADER:
                raise ValueError(f"shared-memory segment {name} has no data")
            mapped = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        entry = _In(fd, mapped, size)
        self._maps[name] = entry
        return entry

    def _release(self) -> None:
        """Drop the lock of every mapping nothing outside refers to (its arrays are gone)."""
        for name, entry in list(self._maps.items()):
            # Free: referenced by the entry's slot and getrefcount's argument only.
            if entry.locked and sys.getrefcount(entry.map) == 2:
                if entry.forked:
                    # A child forked while this was locked may still read it through the same
                    # lock (flock belongs to the open file, which the child shares): only close
                    # our descriptor; the lock lasts until the child's copy is gone too.
                    del self._maps[name]
                    with contextlib.suppress(BufferError):
                        entry.map.close()
                    os.close(entry.fd)
                    continue
                fcntl.flock(entry.fd, fcntl.LOCK_UN)
                entry.locked = False

    def _forked(self) -> None:
        with self._lock:
            for entry in self._maps.values():
                if entry.locked:
                    entry.forked = True

    def release(self) -> None:
        with self._lock:
            self._release()

    def trim(self) -> bool:
        """Let go of mappings not used for the idle time and no longer referred to."""
        with self._lock:
            self._release()
            cutoff = self._clock() - self._idle.idle_s
            for name, entry in list(self._maps.items()):
                if not entry.locked and entry.used <= cutoff:
                    del self._maps[name]
                    with contextlib.suppress(BufferError):
                        entry.map.close()
                    os.close(entry.fd)
            return bool(self._maps)

    def held(self) -> int:
        with self._lock:
            return len(self._maps)


_ALL_INBOXES: weakref.WeakSet[Inbox] = weakref.WeakSet()
_OUTBOXES: dict[Path, Outbox] = {}
_INBOXES: dict[Path, Inbox] = {}
_REGISTRY = threading.Lock()


def outbox(folder: Path) -> Outbox:
    """This process's outbox for ``folder``."""
    with _REGISTRY:
        return _OUTBOXES.get(folder) or _OUTBOXES.setdefault(folder, Outbox(folder))


def inbox(folder: Path) -> Inbox:
    """This process's inbox for ``folder``."""
    with _REGISTRY:
        return _INBOXES.get(folder) or _INBOXES.setdefault(folder, Inbox(folder))


def _after_fork_in_parent() -> None:
    for box in list(_ALL_INBOXES):
        box._forked()


def _after_fork_in_child() -> None:
    """A forked child starts with empty boxes. What it inherited stays as it is: its descriptors
    keep the locks on segments the parent had taken, so their writers wait for the child too."""
    global _REGISTRY
    _REGISTRY = threading.Lock()
    _OUTBOXES.clear()
    _INBOXES.clear()


os.register_at_fork(after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def sweep_dead(folder: Path) -> int:
    """Remove segments whose writer process is gone (readers' mappings keep their pages)."""
    removed = 0
    for path in folder.glob(f"{PREFIX}*"):
        found = _NAME.match(path.name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
            continue  # alive (or another user's pid: not ours to judge, the folder is ours though)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
