"""Cluster lifecycle and object operations against a real local daemon."""

from __future__ import annotations

import time

import psutil
import pytest
import user_funcs as uf
from conftest import free_port

import runhouse as rh
from runhouse.exceptions import BadRequest, ConfigError, ObjectNotFound


def test_up_if_not_starts_and_teardown_stops(rh_home):
    c = rh.cluster(name="life", host="localhost", server_connection_type="none", server_port=free_port())
    assert not c.is_up()
    assert c.up_if_not() is c and c.is_up()
    pid = c.status()["pid"]
    assert c.up_if_not().status()["pid"] == pid  # already up: nothing restarted
    c.teardown()
    assert not c.is_up()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_restart_server_gives_fresh_daemon(own_cluster):
    c = own_cluster
    c.put("before", 1)
    old_pid = c.status()["pid"]
    c.restart_server()
    assert c.status()["pid"] != old_pid
    assert "before" not in c.keys()
    assert rh.function(uf.add).to(c)(1, 1) == 2


def test_status_lists_workers_objects_and_running_calls(own_cluster):
    c = own_cluster
    rh.function(uf.add).to(c)
    info = c.status()
    assert info["rh_version"] == rh.__version__ and info["port"] == c.server_port
    default = next(w for w in info["workers"] if w["name"] == "default_env")
    assert default["pid"] and default["rss_mb"] > 0 and "add" in default["objects"]
    sleeper = rh.function(uf.sleep_and_thread).to(c)
    handle = sleeper.options(run_async=True)(1.5)

    async def run_and_look():
        import asyncio

        task = asyncio.ensure_future(handle)
        await asyncio.sleep(0.5)
        running = c.status()["workers"]
        await task
        return running

    import asyncio

    workers = asyncio.run(run_and_look())
    running = next(w for w in workers if w["name"] == "default_env")["running"]
    assert [r["key"] for r in running] == ["sleep_and_thread"]


def test_put_get_keys_rename_delete(cluster):
    cluster.put("numbers", [1, 2, 3])
    assert cluster.get("numbers") == [1, 2, 3]
    assert "numbers" in cluster.keys()
    cluster.rename("numbers", "nums")
    assert "numbers" not in cluster.keys() and cluster.get("nums") == [1, 2, 3]
    cluster.delete("nums")
    assert "nums" not in cluster.keys()
    with pytest.raises(ObjectNotFound):
        cluster.get("nums")
    assert cluster.get("nums", default=None) is None


def test_delete_worker_frees_its_process(cluster):
    env = rh.env(name="to_delete")
    cluster.put("held", bytearray(50 * 2**20), env=env)  # 50 MB held in that worker
    pid = next(e["pid"] for e in cluster.envs() if e["name"] == "to_delete")
    assert psutil.Process(pid).memory_info().rss > 50 * 2**20
    result = cluster.delete("to_delete")
    assert result["envs_stopped"] == ["to_delete"]
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the worker process should exit"
        time.sleep(0.05)
    assert "held" not in cluster.keys()
    assert "to_delete" not in [e["name"] for e in cluster.envs()]


def test_run_returns_code_and_output_per_command(cluster, tmp_path):
    results = cluster.run(["echo hello", "echo oops >&2; exit 3", "pwd"], cwd=str(tmp_path))
    assert results[0] == (0, "hello\n", "")
    assert results[1] == (3, "", "oops\n")
    assert results[2][1].strip() == str(tmp_path)


def test_logs_of_a_named_run(cluster):
    fn = rh.function(uf.print_and_return).to(cluster)
    fn.options(run_name="my-run")("remember me")
    assert "remember me" in cluster.logs("my-run")
    with pytest.raises(BadRequest, match="no output recorded"):
        cluster.logs("unknown-run")


def test_rh_here_is_the_local_daemon_on_the_configured_port():
    here = rh.here
    assert isinstance(here, rh.Cluster) and here.is_local()


def test_cluster_arguments_are_checked():
    with pytest.raises(ConfigError, match="server_connection_type"):
        rh.cluster(name="x", host="localhost", server_connection_type="carrier-pigeon")
    with pytest.raises(ConfigError, match="on-demand clusters"):
        rh.cluster(name="rh-a10x", instance_type="A10G:1", provider="aws")
    with pytest.raises(ConfigError, match="needs host"):
        rh.cluster(name="nohost")


def test_config_round_trip():
    c = rh.cluster(name="cfg", host="localhost", server_port=12345)
    again = rh.Resource.from_config(c.config())
    assert isinstance(again, rh.Cluster) and again.config() == c.config()
