"""Reusable same-host segments (runhouse/protocol/arena.py): a segment is written again only after
its reader took it and let it go, so nothing a program still holds ever changes under it; a reader
that dies or forks keeps that promise too; idle boxes let their memory go."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runhouse.protocol import arena
from runhouse.protocol.arena import HEADER, Inbox, Outbox, sweep_dead

MB = 1 << 20


@pytest.fixture
def folder(tmp_path_factory) -> Path:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm here")
    path = Path("/dev/shm") / f"rh-test-arena-{os.getpid()}-{os.urandom(4).hex()}"
    path.mkdir(mode=0o700)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def _array(fill: int, n: int = 2 * MB) -> np.ndarray:
    return np.full(n // 8, fill, dtype=np.int64)


def _send(out: Outbox, inbox: Inbox, fill: int) -> tuple[str, np.ndarray]:
    data = _array(fill)
    name = out.write(memoryview(data))
    return name, np.frombuffer(inbox.map(name, data.nbytes), dtype=np.int64)


def test_a_segment_is_reused_only_after_its_reader_lets_go(folder):
    out, inbox = Outbox(folder), Inbox(folder)
    first, held = _send(out, inbox, 1)
    second, other = _send(out, inbox, 2)  # the first is still held: a new segment
    assert second != first and out.reused == 0
    assert int(held.min()) == int(held.max()) == 1  # never overwritten
    del other
    inbox.release()  # nothing refers to the second segment's mapping now
    third, again = _send(out, inbox, 3)
    assert third == second and out.reused == 1 and inbox.remapped == 1
    assert int(again.min()) == 3 and int(held.max()) == 1
    del held, again
    fourth, _ = _send(out, inbox, 4)  # the reader lets go lazily: not yet when this one is written
    assert fourth not in (first, second) and out.reused == 1
    fifth, last = _send(out, inbox, 5)  # mapping the fourth let the first two go
    assert fifth in (first, second) and out.reused == 2 and int(last.max()) == 5


def test_a_segment_never_taken_is_never_reused_and_settling_removes_it(folder):
    out, inbox = Outbox(folder), Inbox(folder)
    data = _array(5)
    pending = out.write(memoryview(data))
    other = out.write(memoryview(data))
    assert other != pending and out.reused == 0  # its reader may still come
    out.settle(pending)  # the call ended without anyone reading it
    assert not (folder / pending).exists()
    view = np.frombuffer(inbox.map(other, data.nbytes), dtype=np.int64)
    assert int(view.max()) == 5
    out.settle(other)  # taken: it stays for reuse, its reader's lock decides
    assert (folder / other).exists()


def test_a_larger_free_segment_carries_a_smaller_buffer(folder):
    out, inbox = Outbox(folder), Inbox(folder)
    big = np.zeros(4 * MB // 8)
    name = out.write(memoryview(big))
    inbox.map(name, big.nbytes)
    inbox.release()
    small = np.arange(3 * MB // 8, dtype=np.float64)
    assert out.write(memoryview(small)) == name  # 4 MB holds 3 MB: no new file
    assert np.array_equal(np.frombuffer(inbox.map(name, small.nbytes), dtype=np.float64), small)
    tiny = np.ones(MB // 8)
    inbox.release()
    assert out.write(memoryview(tiny)) != name  # more than twice its size: not used for it


def test_a_reader_that_dies_holding_a_segment_releases_it(folder):
    out = Outbox(folder)
    data = _array(7)
    name = out.write(memoryview(data))
    reader = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from runhouse.protocol.arena import Inbox
        view = Inbox(Path({str(folder)!r})).map({name!r}, {data.nbytes})
        print(int.from_bytes(view[:8], "little"), flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "7"
    assert out.write(memoryview(data)) != name  # the live reader holds it
    proc.kill()
    proc.wait(10)
    assert out.write(memoryview(data)) == name  # its lock went with it


def test_a_fork_keeps_the_segments_its_parent_held(folder):
    out, inbox = Outbox(folder), Inbox(folder)
    name, held = _send(out, inbox, 8)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reads the array it inherited once the parent has let go
        os.close(write)
        os.read(read, 1)
        os._exit(0 if int(held.min()) == int(held.max()) == 8 else 1)
    os.close(read)
    del held
    inbox.release()  # the parent let go; the child still has it
    assert out.write(memoryview(_array(9))) != name, "a segment a forked child may read was reused"
    os.write(write, b"x")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.write(memoryview(_array(9))) == name  # the child is gone: reusable again


def test_idle_boxes_let_their_segments_go(folder):
    now = [0.0]
    out = Outbox(folder, idle_s=2.0, clock=lambda: now[0])
    inbox = Inbox(folder, idle_s=2.0, clock=lambda: now[0])
    name, view = _send(out, inbox, 1)
    pending = out.write(memoryview(_array(2)))  # never taken: it stays while its reader may come
    del view
    now[0] = 5.0
    assert inbox.trim() is False and inbox.held() == 0
    assert out.trim() is True
    assert not (folder / name).exists() and (folder / pending).exists()
    assert out.held() == (folder / pending).stat().st_size - HEADER


def test_the_caps_never_drop_a_pending_segment(folder):
    out = Outbox(folder, keep_count=2)
    names = [out.write(memoryview(_array(i))) for i in range(4)]  # four calls in flight, none read
    assert all((folder / n).exists() for n in names)
    inbox = Inbox(folder)
    for i, n in enumerate(names):
        assert int(np.frombuffer(inbox.map(n, 2 * MB), dtype=np.int64).max()) == i


def test_names_from_a_message_are_checked(folder):
    inbox = Inbox(folder)
    for bad in ("../etc/passwd", "blk-1-../../x", "seg-abc", "blk-12-zz"):
        with pytest.raises(ValueError):
            inbox.map(bad, 10)


def test_segments_of_dead_writers_are_swept(folder):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = folder / f"{arena.PREFIX}{int(proc.stdout)}-{'0' * 16}"
    dead.write_bytes(b"x" * HEADER)
    live = Outbox(folder).write(memoryview(_array(1)))
    assert sweep_dead(folder) == 1
    assert not dead.exists() and (folder / live).exists()


def test_an_old_style_segment_from_an_earlier_client_is_still_read(folder):
    """A client of an earlier version on the same host writes a new ``seg-*`` file per buffer; the
    receiver maps it and removes it at once, as before."""
    from runhouse.protocol.arena import read_segment

    data = os.urandom(3 * MB)
    old = folder / f"seg-{os.urandom(12).hex()}"
    old.write_bytes(data)
    assert bytes(read_segment(folder, old.name, len(data))) == data
    assert not old.exists()
