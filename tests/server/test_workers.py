"""Worker processes: crashes are reported clearly and do not take the daemon down."""

from __future__ import annotations

import psutil
import pytest
import user_funcs as uf

import runhouse as rh
from runhouse.exceptions import ObjectNotFound, WorkerDied


@pytest.mark.parametrize("killer", [uf.die, uf.segfault, uf.sigkill_self])
def test_worker_crash_is_reported_and_isolated(own_cluster, killer):
    c = own_cluster
    crash_env = rh.env(name="crashy")
    add_elsewhere = rh.function(uf.add).to(c)  # lives in default_env
    killer_fn = rh.function(killer).to(c, env=crash_env)
    c.put("doomed", [1, 2], env=crash_env)
    old_pid = rh.function(uf.getpid).to(c, env=crash_env, name="crashy_pid")()

    with pytest.raises(
        WorkerDied,
        match=r"worker 'crashy' \(pid \d+\) (exited with code 3|was killed by signal SIGSEGV|was killed by signal SIGKILL)",
    ):
        killer_fn()

    assert add_elsewhere(2, 2) == 4  # the daemon and other workers keep serving
    with pytest.raises(ObjectNotFound):
        c.get("doomed")  # the dead worker's objects are gone, and say so
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    new_pid = rh.function(uf.getpid).to(c, env=crash_env, name="crashy_pid")()  # the next deploy restarts it
    assert new_pid != old_pid


def test_default_worker_comes_back_after_a_crash(own_cluster):
    c = own_cluster
    die = rh.function(uf.die).to(c)
    with pytest.raises(WorkerDied, match="default_env"):
        die()
    assert rh.function(uf.add).to(c)(3, 4) == 7


def test_a_promoted_method_survives_one_pause_but_not_repeated_blocking():
    from runhouse.server.worker.runtime import _Speed

    speed = _Speed()
    for _ in range(_Speed.PROMOTE_AFTER):
        speed.observe_thread(0.0001, streams=False)
    assert speed.inline
    speed.observe_inline(0.010)  # the machine paused the worker once: stays inline
    for _ in range(_Speed.STRIKE_WINDOW):
        speed.observe_inline(0.0001)
    speed.observe_inline(0.010)
    speed.observe_inline(0.010)  # two strikes, the first forgotten after a window of fast runs
    assert speed.inline
    speed.observe_inline(0.010)  # the third within the window: it blocks, back to the pool for good
    assert not speed.inline and speed.demoted
    for _ in range(100):
        speed.observe_thread(0.0001, streams=False)
    assert not speed.inline
