"""A node of a three-host cluster dies (its processes killed, or its network link cut): calls to the
worker placed on it fail with ``WorkerDied`` naming the node, well before their own timeout; the
head's workers and the other node's keep serving; ``cluster.up()`` brings the node back and the next
deploy to that env runs there again. Hosts are network namespaces (tests/sshhosts.py) sharing this
machine's pid namespace, so the test kills a node's Ray processes by the pids ``RayNodes`` recorded."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess

import placed_funcs as pf
import pytest
import sshlab
import user_funcs as uf
from conftest import free_port

import runhouse as rh
from runhouse.compute import raycluster
from runhouse.compute.raynodes import RayOptions
from runhouse.exceptions import WorkerDied

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MB = 1024 * 1024
CALL_TIMEOUT_S = 25  # a dying node's call must fail as WorkerDied before its own timeout says so


@pytest.fixture(scope="module")
def hosts():
    with sshlab.ray_lab(n=3) as made:
        yield made


@pytest.fixture(scope="module")
def cluster(hosts):
    before = raycluster.RAY_OPTIONS
    raycluster.RAY_OPTIONS = RayOptions(num_cpus=1, object_store_memory=100 * MB)
    try:
        made = rh.cluster(
            name="faulty",
            host=[h.address for h in hosts.hosts],
            ssh_creds={"ssh_user": "root", "ssh_private_key": str(hosts.private_key)},
            server_port=free_port(),
        )
        made.up()
        yield made
        made.teardown()
    finally:
        raycluster.RAY_OPTIONS = before


def _where(cluster, env):
    return rh.function(pf.where).to(cluster, env=env)()["addresses"]


def _dies_naming(pending: concurrent.futures.Future, address: str) -> None:
    with pytest.raises(WorkerDied) as raised:
        pending.result(timeout=CALL_TIMEOUT_S + 30)
    assert f"on node {address}" in str(raised.value), str(raised.value)


def _others_serve(cluster, hosts, survivor_env, survivor: int) -> None:
    assert rh.function(uf.add).to(cluster)(20, 22) == 42  # the head's default worker
    assert hosts.hosts[survivor].address in _where(cluster, survivor_env)


def _back_after_up(cluster, hosts, env, i: int) -> None:
    cluster.up()
    assert hosts.hosts[i].address in _where(cluster, env)
    assert rh.function(uf.add).to(cluster, env=env)(1, 1) == 2


def test_a_node_whose_processes_are_killed(cluster, hosts):
    doomed, other = (
        rh.env(name="doomed_1", compute={"node_idx": 1}),
        rh.env(name="other_2", compute={"node_idx": 2}),
    )
    assert hosts.hosts[1].address in _where(cluster, doomed)
    assert hosts.hosts[2].address in _where(cluster, other)
    sleeper = rh.function(uf.sleep_for).to(cluster, env=doomed)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sleeper, 120, timeout=CALL_TIMEOUT_S)
        # the call is running on node 1 when everything of ours there (Ray and our worker) is killed
        assert rh.function(uf.add).to(cluster)(0, 0) == 0
        pids = cluster._daemon.ray.started()[hosts.hosts[1].address]
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        _dies_naming(pending, hosts.hosts[1].address)
    _others_serve(cluster, hosts, other, 2)
    dead = _node(cluster, hosts.hosts[1].address)
    assert dead["workers"] == []  # the worker is gone from the daemon's view too
    _back_after_up(cluster, hosts, doomed, 1)


def _node(cluster, address):
    """The status entry of the node at ``address`` (an alive one if Ray lists it twice)."""
    nodes = [n for n in cluster.status()["nodes"] if n["address"] == address]
    return max(nodes, key=lambda n: n["alive"])


def test_a_node_whose_link_is_cut(cluster, hosts):
    cut, other = (
        rh.env(name="cut_2", compute={"node_idx": 2}),
        rh.env(name="other_1", compute={"node_idx": 1}),
    )
    assert hosts.hosts[2].address in _where(cluster, cut)
    assert hosts.hosts[1].address in _where(cluster, other)
    sleeper = rh.function(uf.sleep_for).to(cluster, env=cut)
    link = hosts.hosts[2].root_link
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sleeper, 120, timeout=CALL_TIMEOUT_S)
        assert rh.function(uf.add).to(cluster)(0, 0) == 0
        subprocess.run(["ip", "link", "set", "dev", link, "down"], check=True)
        try:
            _dies_naming(pending, hosts.hosts[2].address)
            _others_serve(cluster, hosts, other, 1)
        finally:
            subprocess.run(["ip", "link", "set", "dev", link, "up"], check=True)
    _back_after_up(cluster, hosts, cut, 2)
