"""``rh.cluster(host=[h1, h2, h3])`` on three SSH test hosts (network namespaces with their own sshd
and home, see tests/sshhosts.py): runhouse bootstrapped on every host at once, Ray across them,
calls through the head's daemon, each node in ``status()``, and ``teardown()`` stopping every
process of ours on every host. The hosts share this machine's pid namespace, so the test checks
processes by pid here."""

from __future__ import annotations

import psutil
import pytest
import sshlab
import user_funcs as uf
from conftest import free_port

import runhouse as rh
from runhouse.compute import raycluster
from runhouse.compute.raynodes import RayOptions
from runhouse.exceptions import SSHError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MB = 1024 * 1024


@pytest.fixture(scope="module")
def hosts():
    with sshlab.ray_lab(n=3) as made:
        yield made


@pytest.fixture(autouse=True)
def small_ray(monkeypatch):
    # one CPU and a small object store per node: three nodes share this machine
    monkeypatch.setattr(raycluster, "RAY_OPTIONS", RayOptions(num_cpus=1, object_store_memory=100 * MB))


def _creds(hosts):
    return {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_three_hosts_come_up_serve_through_the_head_list_nodes_and_tear_down(hosts, capfd):
    addresses = [h.address for h in hosts.hosts]
    cluster = rh.cluster(name="trio", host=addresses, ssh_creds=_creds(hosts), server_port=free_port())
    ours: list[int] = []
    try:
        cluster.up()
        err = capfd.readouterr().err
        for address in addresses:  # every host's bootstrap and Ray, each line prefixed with its host
            for step in ("connecting to root@", "using /", "uv: ", "installing ray", "Ray is up (pids "):
                assert any(line.startswith(f"[{address}] {step}") for line in err.splitlines()), (
                    address,
                    step,
                    err[-3000:],
                )
        assert f"[{addresses[0]}] daemon is up" in err

        assert rh.function(uf.add).to(cluster)(2, 3) == 5
        assert rh.function(uf.python_prefix).to(cluster)().startswith(f"{hosts.hosts[0].home}/.rh/venvs/")

        status = cluster.status()
        alive = [n for n in status["nodes"] if n["alive"]]
        assert sorted(n["address"] for n in alive) == sorted(addresses)
        assert [n["address"] for n in alive if n["is_head"]] == [addresses[0]]
        assert all(n["cpus"] == 1.0 and n["gpus"] == 0.0 and n["memory"] > 0 for n in alive)

        ours.append(int(status["server_pid"]))
        ours += [int(w["pid"]) for w in status["env_servlet_processes"].values() if w.get("pid")]
        started = cluster._daemon.ray.started()
        assert all(started[a] for a in addresses)
        ours += [pid for pids in started.values() for pid in pids]
        assert all(_running(pid) for pid in ours)
    finally:
        cluster.teardown()
    assert not [pid for pid in ours if _running(pid)]
    assert not cluster.is_up()


def test_a_failing_host_names_itself_and_its_step(hosts):
    unreachable = hosts.unreachable_address()
    good = [h.address for h in hosts.hosts[:2]]
    cluster = rh.cluster(
        name="broken", host=[*good, unreachable], ssh_creds=_creds(hosts), server_port=free_port()
    )
    with pytest.raises(SSHError) as raised:
        cluster.up()
    message = str(raised.value)
    assert f"[{unreachable}] cannot reach root@{unreachable}:22 (step: connect)" in message
    assert not any(f"[{a}]" in message for a in good)
