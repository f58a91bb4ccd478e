"""``num_nodes=2`` through SkyPilot: both nodes SkyPilot reports become one multi-node cluster (our
daemon on the head, Ray across both), on two network-namespace hosts handed out by the test's
SkyPilot backend (tests/compute/skylab.py)."""

from __future__ import annotations

import parallel_funcs as pf
import psutil
import pytest
import skylab
import sshlab
from conftest import free_port

import runhouse as rh
from runhouse.compute import raycluster
from runhouse.compute.raynodes import RayOptions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MB = 1024 * 1024


@pytest.fixture(scope="module")
def hosts():
    with sshlab.ray_lab(n=2) as made:
        yield made


@pytest.fixture(scope="module")
def cloud(sky_home, hosts):
    made = skylab.Cloud(hosts=list(hosts.hosts), private_key=hosts.private_key)
    saved = raycluster.RAY_OPTIONS
    raycluster.RAY_OPTIONS = RayOptions(
        num_cpus=1, object_store_memory=100 * MB
    )  # two nodes share this machine
    with skylab.install(made):
        yield made
    raycluster.RAY_OPTIONS = saved


def test_two_nodes_launch_as_one_multi_node_cluster(cloud, hosts):
    ours: list[int] = []
    two = rh.cluster(
        name="rh-two",
        instance_type="CPU:2",
        provider="aws",
        num_nodes=2,
        autostop_mins=20,
        server_port=free_port(),
    )
    assert two.config()["num_nodes"] == 2
    two.up()
    try:
        launched = cloud.provisioned[-1]
        assert launched.cluster == "rh-two" and launched.nodes == [h.address for h in hosts.hosts]
        assert two.ips == launched.nodes and two.config()["internal_ips"] == launched.nodes
        assert cloud.autostop["rh-two"] == 20  # SkyPilot stops both nodes when idle
        nodes = two.status()["nodes"]
        assert len(nodes) == 2 and all(n["alive"] for n in nodes), nodes

        homes = {}
        for i in range(len(hosts.hosts)):  # a function placed on each node runs there
            where = rh.function(pf.where).to(two, env=rh.env(name=f"node{i}", compute={"node_idx": i}))
            homes[i] = where()["home"]
        assert homes == {0: str(hosts.hosts[0].home), 1: str(hosts.hosts[1].home)}
        status = two.status()
        assert status["sky"]["nodes"] == 2
        started = two._daemon.ray.started()  # the Ray processes we started, per node
        assert sorted(a for a, pids in started.items() if pids) == sorted(launched.nodes)
        ours = [int(status["server_pid"]), *(pid for pids in started.values() for pid in pids)]
        assert all(_running(pid) for pid in ours)
    finally:
        two.teardown()
    assert "rh-two" in cloud.terminated and not two.is_up()
    # the hosts share this machine's pid namespace: our daemon and the Ray we started, by pid
    assert not [pid for pid in ours if _running(pid)]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
