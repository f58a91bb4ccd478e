"""Same-host shared memory for large buffers: the folder, the host id, and old-style segments.

When a client and a daemon run on one machine as one user (their :func:`host_id` match), large
out-of-band buffers of a pickle payload go through files in ``/dev/shm/rh-<uid>/`` and only the
file's name travels through the sockets. Those files are reusable segments their writer keeps
(:mod:`runhouse.protocol.arena`). Before them, every buffer went to a new ``seg-*`` file that
the receiver mapped copy-on-write and unlinked at once; :func:`map_segment` still reads those
(from a client of an earlier version on the same host), and :func:`sweep` removes ones whose
receiver never came.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import time
from pathlib import Path

SHM_ROOT = Path("/dev/shm")
STALE_AFTER_S = 600.0


def shm_dir() -> Path | None:
    """This user's private segment folder, created on first use; None where there is no /dev/shm."""
    if not SHM_ROOT.is_dir():
        return None
    folder = SHM_ROOT / f"rh-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
            return None  # someone else's folder: do not trust it
    except OSError:
        return None
    return folder


def host_id() -> str:
    """Identifies this machine, boot and user: equal ids can share segments."""
    parts = [str(os.getuid())]
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id"):
        with contextlib.suppress(OSError):
            parts.append(Path(path).read_text().strip())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def map_segment(folder: Path, name: str, length: int) -> memoryview:
    """Map a segment copy-on-write and remove its file; the mapping lives as long as the view."""
    if "/" in name or not name.startswith("seg-"):
        raise ValueError(f"bad shared-memory segment name {name!r}")
    path = folder / name
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size != length:
            raise ValueError(f"shared-memory segment {name} has the wrong size")
        mapped = (
            mmap.mmap(fd, length, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            if length
            else None
        )
    finally:
        os.close(fd)
        discard(folder, name)
    return memoryview(mapped) if mapped is not None else memoryview(b"")


def discard(folder: Path, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(folder / name)


def sweep(folder: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove segments nobody picked up; returns how many."""
    removed = 0
    now = time.time()
    for path in folder.glob("seg-*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed += 1
    return removed
