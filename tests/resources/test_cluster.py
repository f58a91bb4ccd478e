"""Cluster lifecycle and object operations against a real local daemon."""

from __future__ import annotations

import ast
import inspect
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import user_funcs as uf
from conftest import free_port

import runhouse as rh
from runhouse.client.transport import Endpoint
from runhouse.compute import local
from runhouse.compute.daemon import DaemonHost, DaemonSpec, DenIdentity, ThroughDaemon
from runhouse.exceptions import BadRequest, ConfigError, ObjectNotFound
from runhouse.resources import cluster as cluster_module


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
    with pytest.raises(ConfigError, match="host: not for on-demand clusters"):
        rh.cluster(name="rh-a10x", instance_type="A10G:1", provider="aws", host="10.0.0.5")
    with pytest.raises(ConfigError, match="unknown rh.cluster argument.*: colour"):
        rh.cluster(name="rh-a10x", instance_type="A10G:1", provider="aws", colour="red")
    with pytest.raises(ConfigError, match="needs host"):
        rh.cluster(name="nohost")


def test_config_round_trip():
    c = rh.cluster(name="cfg", host="localhost", server_port=12345)
    again = rh.Resource.from_config(c.config())
    assert isinstance(again, rh.Cluster) and again.config() == c.config()


def test_multi_node_refuses_what_it_does_not_support_yet():
    creds = {"ssh_user": "me", "password": "pw"}
    trio = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    made = rh.cluster(name="trio", host=trio, ssh_creds=creds)  # the Ray kind; nothing connects yet
    assert type(made._daemon).__name__ == "RayClusterDaemon"
    assert made.ips == trio and made.server_address == "localhost"
    assert type(rh.cluster(name="trio", ips=trio, ssh_creds=creds)._daemon).__name__ == "RayClusterDaemon"
    one = rh.cluster(name="solo", host=trio[:1], ssh_creds=creds)
    again = rh.Resource.from_config({**one.config(), "host": trio})  # a saved config too
    assert type(again._daemon).__name__ == "RayClusterDaemon"
    with pytest.raises(
        ConfigError, match=r"server_connection_type='none' is not supported yet on multi-node"
    ):
        rh.cluster(name="trio", host=trio, ssh_creds=creds, server_connection_type="none")
    with pytest.raises(ConfigError, match="autostop_mins is not supported yet on multi-node"):
        rh.cluster(name="trio", host=trio, ssh_creds=creds, autostop_mins=5)
    with pytest.raises(ConfigError, match="localhost names this machine"):
        rh.cluster(name="trio", host=["localhost", *trio], ssh_creds=creds)


# -- kinds: Cluster holds one DaemonHost and never asks which kind it is ----------------------------
class CopyingKind(DaemonHost):
    """A third kind, for tests only: a real daemon on this machine whose "host" keeps its own
    folder, to which code is copied as it would be to a remote host."""

    needs_code_sync = True

    def __init__(self, spec: DaemonSpec) -> None:
        self.spec = spec
        self.host_dir = spec.settings.home / "copying-kind" / str(spec.port)
        self.events: list[str] = []

    def up(self, env_vars: dict[str, str], den_identity: DenIdentity | None = None) -> None:
        self.events.append("up")
        local.start_daemon(self.spec.settings, "127.0.0.1", self.spec.port, extra_env=env_vars)

    def stop(self) -> None:
        self.events.append("stop")
        local.stop_daemon(self.spec.settings, self.spec.port)

    def is_up(self) -> bool:
        return local.ping("127.0.0.1", self.spec.port) is not None

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.spec.port)

    def token(self) -> str | None:
        return local.read_token(self.spec.settings, self.spec.port)

    @property
    def server_address(self) -> str:
        return "127.0.0.1"

    @property
    def bind_host(self) -> str:
        return "127.0.0.1"

    def interactive_shell(self, command: str | None = None) -> int:
        return subprocess.call(command or "true", shell=True, cwd=self.host_dir)

    def rsync(self, source: str, dest: str, up: bool, contents: bool = False) -> None:
        target = self.host_dir / dest if up else Path(dest)
        shutil.copytree(source if up else self.host_dir / source, target, dirs_exist_ok=True)

    def sync_code(self, folder: Path, name: str, through_daemon: ThroughDaemon) -> str:
        self.events.append(f"sync {name}")
        dest = self.host_dir / "code" / name
        shutil.copytree(folder, dest, dirs_exist_ok=True)
        return str(dest)


class CopyingCluster(rh.Cluster):
    def _make_daemon(self) -> DaemonHost:
        return CopyingKind(self._daemon_spec())


def test_a_new_kind_plugs_into_cluster_unchanged(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "kind_probe_mod.py").write_text("def where(x):\n    return x * 2, __file__\n")
    monkeypatch.syspath_prepend(str(project))
    import kind_probe_mod

    port = free_port()
    c = CopyingCluster(name="copying", host="localhost", server_port=port)
    kind = c._daemon
    assert not c.is_up()
    assert c.up_if_not() is c and c.is_up()
    assert c.server_address == "127.0.0.1" and c.endpoint(external=True) == f"http://127.0.0.1:{port}"
    doubled, file = rh.function(kind_probe_mod.where).to(c)(21)
    assert doubled == 42 and Path(file).is_relative_to(kind.host_dir / "code")  # the kind copied it
    assert any(e.startswith("sync project-") for e in kind.events)
    c.put("k", [1, 2])
    assert c.get("k") == [1, 2] and c.run(["echo hi"]) == [(0, "hi\n", "")]
    assert c.ssh("test -f code/*/kind_probe_mod.py") == 0
    again = pickle.loads(pickle.dumps(c))  # the kind travels as the cluster's fields, rebuilt the same
    assert isinstance(again._daemon, CopyingKind) and again.get("k") == [1, 2]
    c.teardown()
    assert not c.is_up() and kind.events[0] == "up" and kind.events[-1] == "stop"


def test_only_the_factory_asks_which_kind_a_cluster_is():
    source = inspect.getsource(cluster_module.Cluster)
    kind_names = {"LocalDaemon", "RemoteDaemon", "is_local", "LOCAL_HOSTS"}
    askers = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            used |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if used & kind_names:
                askers.add(node.name)
    # is_local() says where the head host is; on_this_cluster reads the *recorded* config's host
    assert askers == {"_make_daemon", "is_local", "on_this_cluster"}
