"""Functions sent to a real daemon and called through their stubs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import user_funcs as uf

import runhouse as rh
from runhouse.exceptions import ConfigError, RemoteException


def test_call_runs_in_worker_process(cluster):
    add = rh.function(uf.add).to(cluster)
    assert add(1, 2) == 3
    assert add("a", b="b") == "ab"
    worker_pid = rh.function(uf.getpid).to(cluster)()
    assert worker_pid != __import__("os").getpid()
    daemon_pid = cluster.status()["pid"]
    assert worker_pid != daemon_pid  # objects live in workers, never in the daemon


def test_uncalled_function_runs_locally():
    assert rh.function(uf.add)(2, 3) == 5


def test_exception_keeps_type_and_remote_traceback(cluster):
    fail = rh.function(uf.fail).to(cluster)
    with pytest.raises(ValueError, match="bad input 42") as info:
        fail("bad input 42")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "user_funcs.py" in notes and "raise ValueError" in notes
    with pytest.raises(KeyError, match="missing-thing"):
        rh.function(uf.fail_deep).to(cluster)()


def test_exception_of_unknown_type_becomes_remote_exception(cluster, tmp_path):
    (tmp_path / "vanishing_mod.py").write_text(
        textwrap.dedent("""
        class OnlyOnTheClusterError(Exception):
            pass

        def raise_it():
            raise OnlyOnTheClusterError("made remotely")
    """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import vanishing_mod

        remote = rh.function(vanishing_mod.raise_it).to(cluster)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_mod", None)
    (tmp_path / "vanishing_mod.py").rename(tmp_path / "gone.py")  # the client can no longer import it
    with pytest.raises(RemoteException) as info:
        remote()
    assert info.value.type_name == "vanishing_mod.OnlyOnTheClusterError"
    assert info.value.message == "made remotely"
    assert "in raise_it" in info.value.remote_traceback
    assert "runhouse/server" not in info.value.remote_traceback  # our own frames are left out


def test_print_streams_while_the_call_runs(cluster, capsys):
    tick = rh.function(uf.tick).to(cluster)
    seen: list[tuple[float, str]] = []
    real_write = sys.stdout.write

    class Recorder:
        def write(self, text):
            seen.append((time.monotonic(), text))
            return real_write(text)

        def flush(self):
            pass

    old = sys.stdout
    sys.stdout = Recorder()  # type: ignore[assignment]
    try:
        start = time.monotonic()
        assert tick(3, 1.0) == "done"
        end = time.monotonic()
    finally:
        sys.stdout = old
    first_tick = next(t for t, text in seen if "tick 0" in text)
    assert first_tick - start < 1.0, "the first line should arrive before the call returns"
    assert end - first_tick > 1.5
    assert [text for _, text in seen if "tick" in text] == ["tick 0\n", "tick 1\n", "tick 2\n"]


def test_logging_streams_to_caller(cluster, capsys):
    assert rh.function(uf.log_lines).to(cluster)() == "logged"
    out = capsys.readouterr().out
    assert "info from the worker" in out and "warning from the worker" in out


def test_output_can_be_turned_off(cluster, capsys):
    fn = rh.function(uf.print_and_return).to(cluster)
    assert fn.options(stream_logs=False)("quiet text") == 10
    assert "quiet text" not in capsys.readouterr().out
    assert fn("loud text") == 9
    assert "loud text" in capsys.readouterr().out


def test_parameter_named_like_option_reaches_function(cluster, capsys):
    fn = rh.function(uf.takes_options).to(cluster)
    assert fn(1, stream_logs="mine", run_name="also mine") == {
        "x": 1,
        "stream_logs": "mine",
        "run_name": "also mine",
    }
    # a function without such a parameter treats the keyword as a call option
    add = rh.function(uf.add).to(cluster)
    assert add(1, 2, stream_logs=False) == 3


def test_options_are_validated(cluster):
    add = rh.function(uf.add).to(cluster)
    with pytest.raises(ConfigError, match="valid options: run_async, stream_logs"):
        add.options(stream_log=True)


def test_generator_streams_items_as_they_are_made(cluster):
    items = rh.function(uf.slow_items).to(cluster)
    start = time.monotonic()
    arrivals = []
    for item in items(4, 0.4):
        arrivals.append((item, time.monotonic() - start))
    assert [i for i, _ in arrivals] == [0, 1, 2, 3]
    assert arrivals[0][1] < 1.0 and arrivals[-1][1] > 1.4


def test_async_function_and_async_generator(cluster):
    async_add = rh.function(uf.async_add).to(cluster)
    assert asyncio.run(async_add(2, 3)) == 5
    items = rh.function(uf.async_items).to(cluster)

    async def collect():
        return [i async for i in items(3)]

    assert asyncio.run(collect()) == [0, 2, 4]


def test_run_async_gives_awaitable_for_sync_function(cluster):
    add = rh.function(uf.add).to(cluster)

    async def both():
        return await asyncio.gather(add(1, 1, run_async=True), add.run_async(2, 2))

    assert asyncio.run(both()) == [2, 4]


def test_remote_keeps_result_on_cluster(cluster):
    add = rh.function(uf.add).to(cluster)
    handle = add.remote(20, 22)
    assert isinstance(handle, rh.RemoteResult)
    assert handle.key in cluster.keys()
    assert handle.fetch() == 42
    handle.delete()
    assert handle.key not in cluster.keys()


def test_concurrent_calls_run_concurrently(cluster):
    sleeper = rh.function(uf.sleep_and_thread).to(cluster)
    results: list[int] = []

    def one():
        results.append(sleeper(0.2))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 4  # four different worker threads
    # four calls meet inside the function at once: they ran side by side, not one after another
    meet = rh.function(uf.meet).to(cluster)
    met: list[bool] = []
    threads = [threading.Thread(target=lambda: met.append(meet(4, 30.0))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert met == [True] * 4


def test_edited_source_is_picked_up_on_next_to(cluster, tmp_path):
    pkg = tmp_path / "editpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    source = pkg / "mod.py"
    source.write_text("def version():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import editpkg.mod as mod

        assert rh.function(mod.version).to(cluster, name="version")() == 1
        source.write_text("def version():\n    return 2  # edited\n")
        remote = rh.function(mod.version).to(cluster, name="version")
        assert remote() == 2
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("editpkg", "editpkg.mod"):
            sys.modules.pop(name, None)


def test_main_module_function_is_sent_by_value(cluster, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        import runhouse as rh

        def shout(text):
            return text.upper() + "!"

        c = rh.cluster(name="x", host="localhost", server_port={cluster.server_port})
        print(rh.function(shout).to(c)("hello"))
        print(rh.function(lambda x: x * 3, name="triple").to(c)(5))
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["HELLO!", "15"]


def test_function_stub_by_name_from_another_client(cluster):
    rh.function(uf.add).to(cluster, name="shared_add")
    again = rh.function(
        name="shared_add", system=rh.cluster(name="other", host="localhost", server_port=cluster.server_port)
    )
    assert again(5, 6) == 11


def test_to_needs_a_cluster():
    with pytest.raises(ConfigError, match="needs a cluster"):
        rh.function(uf.add).to("not a cluster")  # type: ignore[arg-type]


def test_env_vars_reach_the_env_worker(cluster):
    env = rh.env(env_vars={"RH_TEST_FLAG": "on"}, name="flag_env")
    get_env = rh.function(uf.get_env).to(cluster, env=env)
    assert get_env("RH_TEST_FLAG") == "on"
    default_pid = rh.function(uf.getpid).to(cluster)()
    env_pid = rh.function(uf.getpid).to(cluster, env="flag_env", name="getpid_env")()
    assert default_pid != env_pid
    cluster.delete("flag_env")


def test_large_array_round_trip(cluster):
    np = pytest.importorskip("numpy")
    identity = rh.function(uf.identity).to(cluster)
    arr = np.arange(5_000_000, dtype=np.float64)  # 40 MB
    back = identity(arr)
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_large_arrays_use_shared_memory_on_the_same_host(cluster):
    np = pytest.importorskip("numpy")
    from runhouse.protocol.shm import shm_dir

    folder = shm_dir()
    if folder is None:
        pytest.skip("no /dev/shm here")
    identity = rh.function(uf.identity).to(cluster, name="identity_shm")
    arr = np.random.rand(4_000_000)  # 32 MB: over the shared-memory threshold
    back = identity(arr)
    assert np.array_equal(back, arr) and back.flags.writeable
    back[0] = -1.0  # the copy is ours: writing it does not touch the original
    assert arr[0] != -1.0
    assert not list(folder.glob("seg-*")), "segments are removed once read"
    assert cluster.client._shm_state == folder
    del back
    _no_segments_left(folder, os.getpid(), rh.function(uf.getpid).to(cluster, name="getpid_shm")())


def _no_segments_left(folder, *pids, within_s=10.0):
    """Reusable segments (protocol/arena.py) of these processes are gone once they have been idle."""
    deadline = time.monotonic() + within_s
    while True:
        left = [p.name for pid in pids for p in folder.glob(f"blk-{pid}-*")]
        if not left:
            return
        assert time.monotonic() < deadline, f"segments still there after {within_s}s idle: {left}"
        time.sleep(0.2)


def test_shared_memory_segments_are_reused_and_never_change_under_a_holder(cluster):
    """Same-host calls copy large buffers into segments their writer keeps and uses again once the
    reader let them go (protocol/arena.py). The worker keeps every argument it got, the client
    keeps every result: none of them changes while later calls run; results the client drops
    free their segments for the next calls."""
    np = pytest.importorskip("numpy")
    from runhouse.protocol.arena import inbox, outbox
    from runhouse.protocol.shm import shm_dir

    folder = shm_dir()
    if folder is None:
        pytest.skip("no /dev/shm here")
    keep = rh.function(uf.keep).to(cluster, name="keep_shm")
    identity = rh.function(uf.identity).to(cluster, name="identity_reuse")
    n = (12 << 20) // 8  # 12 MiB: through shared memory
    back = []
    for fill in range(1, 5):
        array = np.full(n, fill, dtype=np.int64)
        assert keep(array, "shm") == [k * n for k in range(1, fill + 1)]
        back.append(identity(array))
    for fill, result in enumerate(back, start=1):
        assert int(result.min()) == int(result.max()) == fill
    reused, remapped = outbox(folder).reused, inbox(folder).remapped
    for fill in range(5, 10):
        assert int(identity(np.full(n, fill, dtype=np.int64))[-1]) == fill  # dropped at once
    assert outbox(folder).reused >= reused + 3 and inbox(folder).remapped >= remapped + 3
    for fill, result in enumerate(back, start=1):
        assert int(result.min()) == int(result.max()) == fill


def test_large_arrays_without_shared_memory(cluster):
    np = pytest.importorskip("numpy")
    remote = rh.cluster(name="no-shm", host="localhost", server_port=cluster.server_port)
    remote.client._shm_state = None  # as a client on another machine would be
    identity = rh.function(uf.identity).to(remote, name="identity_sockets")
    arr = np.arange(3_000_000, dtype=np.int64)  # 24 MB, out of band through the sockets
    back = identity(arr)
    assert np.array_equal(back, arr) and back.flags.writeable


def test_failed_call_leaves_no_shared_memory_behind(cluster):
    np = pytest.importorskip("numpy")
    from runhouse.protocol.shm import shm_dir

    folder = shm_dir()
    if folder is None:
        pytest.skip("no /dev/shm here")
    fail = rh.function(uf.fail).to(cluster, name="fail_shm")
    with pytest.raises(ValueError):
        fail(np.zeros(2_000_000))  # the argument is not a str: the worker still reads it
    nothing_here = rh.function(uf.add).to(cluster, name="add_shm")
    with pytest.raises(TypeError):
        nothing_here(np.zeros(2_000_000))  # add() misses its second argument
    assert not list(folder.glob("seg-*"))
    _no_segments_left(folder, os.getpid())  # taken ones kept a while for reuse, then gone


def test_arguments_that_need_pickling_by_value(cluster, tmp_path):
    apply = rh.function(uf.apply).to(cluster)
    offset = 10
    assert apply(lambda x: x + offset, 5) == 15  # a closure: sent by value

    class Local:  # defined in a function: not importable on the cluster
        def __init__(self, n):
            self.n = n

        def __call__(self, x):
            return x * self.n

    assert apply(Local(3), 4) == 12
    script = tmp_path / "main_arg.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(uf.__file__.rsplit("/", 1)[0])!r})
        import runhouse as rh
        import user_funcs as uf

        def double(x):  # lives in __main__: the cluster cannot import it by name
            return 2 * x

        c = rh.cluster(name="x", host="localhost", server_port={cluster.server_port})
        print(rh.function(uf.apply).to(c)(double, 21))
    """)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
