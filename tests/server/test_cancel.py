"""Cancelled and timed-out calls, against real daemons of these tests' own.

A call whose client goes away (closed connection, Ctrl-C, a cancelled task) is cancelled on the
cluster: a sync call's thread is interrupted, a coroutine's task cancelled, and the call stops
counting as running. ``timeout=`` does the same after that many seconds and raises TimeoutError.
Calls blocked in C cannot be interrupted; they must not starve the worker or keep autostop away.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import user_funcs as uf
from conftest import ASSETS, free_port, start_cluster

import runhouse as rh
from runhouse.compute import local
from runhouse.exceptions import ConfigError


@pytest.fixture(scope="module")
def cluster_c(rh_home: Path) -> Iterator[object]:
    c = start_cluster("cancel")
    yield c
    c.teardown()  # type: ignore[attr-defined]


def _wait_for(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _lines(path: Path, word: str | None = None) -> int:
    try:
        text = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return len(text) if word is None else text.count(word)


def _assert_stops(path: Path) -> None:
    """The call writing to ``path`` every 0.05 s stops doing so (it was interrupted)."""
    deadline = time.monotonic() + 20
    while True:
        before = _lines(path)
        time.sleep(0.4)
        if _lines(path) == before:
            break
        assert time.monotonic() < deadline, f"the call kept running: {path} still grows"
    time.sleep(0.5)
    assert _lines(path) == before, "the call started writing again"


def _running(cluster: object, key: str | None = None) -> list[dict[str, object]]:
    """Calls the workers report as running (of ``key``) and calls the daemon waits for."""
    found: list[dict[str, object]] = []
    for worker in cluster.status()["workers"]:  # type: ignore[attr-defined]
        found += [r for r in worker.get("running", []) if key is None or r["key"] == key]
        found += [{"in_flight": worker["name"]}] * worker["in_flight"]
    return found


def _wait_idle(cluster: object, key: str | None = None) -> None:
    _wait_for(lambda: not _running(cluster, key), f"no running calls of {key or 'any key'}")


def _open_call(cluster: object, key: str, kwargs: dict[str, object], asgi: bool = False) -> socket.socket:
    """Send a JSON call on a raw connection and leave it open; ``asgi`` takes the normal path
    (a query string keeps a call off the fast path)."""
    port = cluster.server_port  # type: ignore[attr-defined]
    token = local.read_token(cluster.settings, port)  # type: ignore[attr-defined]
    body = json.dumps(
        {"data": {"args": [], "kwargs": kwargs}, "serialization": "json", "stream_logs": True}
    ).encode()
    path = f"/{key}/call" + ("?via=asgi" if asgi else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode() + body)
    return sock


def _fast_calls(cluster: object) -> int:
    return int(cluster.status()["fast_calls"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("say", [False, True], ids=["quiet", "streaming"])
@pytest.mark.parametrize("asgi", [False, True], ids=["fast-path", "asgi-path"])
def test_closing_the_connection_interrupts_a_sync_call(cluster_c, tmp_path, asgi, say):
    c = cluster_c
    rh.function(uf.loop_in_python).to(c)
    rh.function(uf.add).to(c)
    _open_call(c, "add", {"a": 1, "b": 2}).close()  # the daemon learns the Host; later calls go fast
    path = tmp_path / "ticks"
    before = _fast_calls(c)
    sock = _open_call(c, "loop_in_python", {"path": str(path), "say": say}, asgi=asgi)
    _wait_for(lambda: _lines(path, "tick") >= 3, "the call to run")
    if say:  # output makes the reply a stream: it has begun when the head arrives
        sock.settimeout(20)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert _running(c, "loop_in_python"), "the call should show as running"
    assert (_fast_calls(c) == before) == asgi, "the call took the other path than intended"
    sock.close()
    _assert_stops(path)
    _wait_idle(c)


def test_cancelling_an_async_call_cancels_its_task_on_the_cluster(cluster_c, tmp_path):
    c = cluster_c
    wait = rh.function(uf.wait_async).to(c)
    path = tmp_path / "async"

    async def call_then_cancel() -> None:
        task = asyncio.ensure_future(wait(str(path)))
        while _lines(path, "start") < 1:
            assert not task.done(), task
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(call_then_cancel())
    _wait_for(lambda: _lines(path, "cancelled") == 1, "the coroutine's cancellation on the cluster")
    _wait_idle(c)


def test_timeout_cancels_the_call_and_raises_timeout_error(cluster_c, tmp_path):
    c = cluster_c
    sleep_for = rh.function(uf.sleep_for).to(c)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"sleep_for timed out after 0.5 s on the cluster"):
        sleep_for(60, timeout=0.5)
    assert time.monotonic() - started < 45, "the timeout should end the call long before it would"
    with pytest.raises(TimeoutError):
        sleep_for.options(timeout=0.5)(60)
    _wait_idle(c)  # the worker dropped the calls, though their threads still sleep
    assert sleep_for(0.01, timeout=30) == 0.01  # a call within its timeout is untouched

    path = tmp_path / "ticks"
    with pytest.raises(TimeoutError):  # a call looping in Python is interrupted, not just answered
        rh.function(uf.loop_in_python).to(c)(str(path), timeout=0.5)
    _assert_stops(path)

    wait = rh.function(uf.wait_async).to(c)
    apath = tmp_path / "async"
    with pytest.raises(TimeoutError):
        asyncio.run(wait(str(apath), timeout=0.5))
    _wait_for(lambda: _lines(apath, "cancelled") == 1, "the coroutine's cancellation on the cluster")
    _wait_idle(c)


def test_timeout_option_is_checked_and_a_functions_own_timeout_parameter_wins(cluster_c):
    c = cluster_c
    own = rh.function(uf.takes_timeout).to(c)
    assert own(1, timeout=7) == {"x": 1, "timeout": 7}
    assert own.options(timeout=5)(2) == {"x": 2, "timeout": None}
    add = rh.function(uf.add).to(c)
    for bad in (0, -1, "1", True, float("nan")):
        with pytest.raises(ConfigError, match="timeout"):
            add(1, 2, timeout=bad)


def test_json_callers_get_504_for_a_timeout(cluster_c):
    c = cluster_c
    rh.function(uf.sleep_for).to(c)
    port = c.server_port
    token = local.read_token(c.settings, port)
    body = json.dumps(
        {"data": {"args": [60], "kwargs": {}}, "serialization": "none", "timeout": 0.5}
    ).encode()
    head = (
        f"POST /sleep_for/call HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 504"), reply[:200]
    assert b"TimeoutError" in reply and b"timed out after 0.5 s" in reply
    _wait_idle(c)


def test_the_daemon_gives_up_on_a_timed_call_when_the_worker_cannot_answer(cluster_c):
    c = cluster_c
    fast = rh.function(uf.on_loop_thread).to(c)
    sleep_for = rh.function(uf.sleep_for).to(c)
    deadline = time.monotonic() + 60
    while not fast():  # until the worker runs it on its loop thread (a promoted fast method)
        assert time.monotonic() < deadline, "the method never got promoted"
    blocker = threading.Thread(target=fast, args=(12,))  # holds the worker's loop for 12 s
    blocker.start()
    try:
        time.sleep(0.5)
        # the worker's own timer cannot fire while its loop is held; the daemon's bound does
        with pytest.raises(TimeoutError, match="the daemon gave up on it"):
            sleep_for.options(timeout=0.5)(0)
        assert blocker.is_alive(), "the daemon should answer before the worker is free again"
    finally:
        blocker.join()
    _wait_idle(c)


def test_ctrl_c_in_the_client_cancels_the_call(cluster_c, tmp_path):
    c = cluster_c
    path, notes = tmp_path / "ticks", tmp_path / "client"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ASSETS)!r})
        import runhouse as rh
        import user_funcs as uf
        c = rh.cluster(name="cancel", host="localhost", server_connection_type="none", server_port={c.server_port})
        add = rh.function(uf.add).to(c)
        try:
            rh.function(uf.loop_in_python).to(c)({str(path)!r})
        except KeyboardInterrupt:
            uf._note({str(notes)!r}, "interrupted")
        uf._note({str(notes)!r}, str(add(1, 2)))  # the client still works
        time.sleep(120)  # alive: only the client closing its connection can have cancelled the call
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        _wait_for(lambda: _lines(path, "tick") >= 3 or proc.poll() is not None, "the call to run")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _wait_for(lambda: _lines(notes) == 2 or proc.poll() is not None, "the client to go on")
        assert proc.poll() is None and notes.read_text().split() == ["interrupted", "3"]
        _assert_stops(path)
        _wait_idle(c)
    finally:
        proc.kill()
        proc.wait()


def test_abandoned_calls_neither_starve_the_worker_nor_keep_autostop_away(rh_home, tmp_path, monkeypatch):
    monkeypatch.setenv("RH_WORKER_THREADS", "8")  # the daemon's workers get 8 threads
    c = rh.cluster(
        name="cancel_autostop",
        host="localhost",
        server_connection_type="none",
        server_port=free_port(),
        autostop_mins=0.1,  # six idle seconds
    ).up()
    try:
        rh.function(uf.loop_in_python).to(c)
        rh.function(uf.block_in_c).to(c)
        other_env_add = rh.function(uf.add).to(c, env=rh.env(name="cancel_autostop_other"))
        sleep_for = rh.function(uf.sleep_for).to(c)
        starts = tmp_path / "starts"
        # 64 calls that never return, 8 at a time (the pool's size): half loop in Python and are
        # interrupted, half block in C and keep their threads. From the third round on, the 8
        # threads are all held by abandoned calls: the rounds run only if the pool grows.
        for round_ in range(8):
            socks = []
            for i in range(8):
                key = "block_in_c" if i % 2 else "loop_in_python"
                socks.append(_open_call(c, key, {"path": str(starts)}))
            _wait_for(lambda r=round_: _lines(starts, "start") == 8 * (r + 1), f"round {round_} to start")
            for sock in socks:
                sock.close()
            _wait_idle(c)
        _assert_stops(starts)  # the Python loops were all interrupted

        results: list[float] = []
        runners = [threading.Thread(target=lambda: results.append(sleep_for(0.2))) for _ in range(8)]
        for t in runners:
            t.start()
        for t in runners:
            t.join(60)
        assert results == [0.2] * 8  # run in threads (too slow to run on the loop)
        assert other_env_add(2, 3) == 5
        c.put("after_abandoned", [1, 2, 3])
        assert c.get("after_abandoned") == [1, 2, 3]
        assert not _running(c)

        deadline = time.monotonic() + 90
        while c.is_up() and time.monotonic() < deadline:
            time.sleep(0.5)
        if c.is_up():
            from runhouse.server.state import _interactive_sessions

            # an SSH terminal on this machine counts as activity, by design; CI has none of its own
            if _interactive_sessions() and os.environ.get("CI") != "true":
                pytest.skip("an interactive SSH session on this machine keeps autostop away")
            pytest.fail("the daemon did not stop itself with only abandoned calls left")
    finally:
        c.teardown()
