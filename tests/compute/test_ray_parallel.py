"""Parallelism on a three-host cluster (network-namespace SSH hosts with Ray, as in
test_ray_cluster.py): ``fn.map`` spread over a copy of the function per node, ``replicate`` placing
replicas on the nodes in turn with a pool that spreads calls, and SPMD ranks (one per node) that
see their own variables and reach each other over the test network. The hosts share a hostname;
each has its own ``HOME``, which is how a worker says where it runs."""

from __future__ import annotations

import collections

import parallel_funcs as pf
import pytest
import sshlab
from conftest import free_port

import runhouse as rh
from runhouse.compute import raycluster
from runhouse.compute.raynodes import RayOptions
from runhouse.exceptions import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MB = 1024 * 1024


@pytest.fixture(scope="module")
def hosts():
    with sshlab.ray_lab(n=3) as made:
        yield made


@pytest.fixture(scope="module")
def cluster(hosts):
    # one CPU and a small object store per node: three nodes share this machine
    saved = raycluster.RAY_OPTIONS
    raycluster.RAY_OPTIONS = RayOptions(num_cpus=1, object_store_memory=100 * MB)
    creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
    made = rh.cluster(
        name="par", host=[h.address for h in hosts.hosts], ssh_creds=creds, server_port=free_port()
    )
    try:
        made.up()
        yield made
    finally:
        made.teardown()
        raycluster.RAY_OPTIONS = saved


def _homes(hosts) -> list[str]:
    return [str(h.home) for h in hosts.hosts]


def test_map_spreads_over_every_node_in_order_and_reuses_its_copies(cluster, hosts):
    where = rh.function(pf.where).to(cluster, env=rh.env(name="map_env"))
    seen = where.map(range(3000))
    assert [s["x"] for s in seen] == list(range(3000))
    per_home = collections.Counter(s["home"] for s in seen)
    assert set(per_home) == set(_homes(hosts)), per_home  # every node ran items
    keys = where._node_keys
    assert keys == [f"where_node_{i}" for i in range(3)]
    envs_before = {e["name"] for e in cluster.envs()}
    assert {f"map_env_node_{i}" for i in range(3)} <= envs_before
    again = where.starmap([(x,) for x in range(600)])
    assert [s["x"] for s in again] == list(range(600))
    assert where._node_keys == keys and {e["name"] for e in cluster.envs()} == envs_before


def test_a_failing_item_on_another_node_is_named_with_its_type(cluster):
    fail_at = rh.function(pf.fail_at).to(cluster)
    with pytest.raises(KeyError, match="item 2222 is bad") as info:
        fail_at.map(range(3000), [2222] * 3000)
    assert "map item 2222 of 3000 failed: fail_at(2222, 2222)" in info.value.__notes__


def test_replicas_go_to_the_nodes_in_turn_and_the_pool_spreads_calls(cluster, hosts):
    original = rh.module(pf.Replica).to(cluster, name="ParReplica")(name="par_replica")
    pool = original.replicate(num_replicas=3)
    assert [r.home() for r in pool] == _homes(hosts)  # replica i on node i
    pids = [r.where() for r in pool]
    served = collections.Counter(pool.where() for _ in range(6))
    assert served == {pid: 2 for pid in pids}
    scaled = pool.map("scale", range(2000), by=3)
    assert [x for _, x in scaled] == [3 * x for x in range(2000)]
    assert set(pool.map("hold", [0.01] * 60)) == set(pids)  # chunks go to every replica


def test_spmd_ranks_one_per_node_see_their_own_values_and_reach_each_other(cluster, hosts):
    env = rh.env(name="spmd_env", spmd="node")
    info = rh.function(pf.rank_info).to(cluster, env=env)
    ranks = info("hello")
    head = hosts.hosts[0].address
    assert [r["RANK"] for r in ranks] == ["0", "1", "2"]
    assert {(r["WORLD_SIZE"], r["LOCAL_RANK"], r["MASTER_ADDR"]) for r in ranks} == {("3", "0", head)}
    assert len({r["MASTER_PORT"] for r in ranks}) == 1 and len({r["pid"] for r in ranks}) == 3
    assert [r["home"] for r in ranks] == _homes(hosts)  # rank r on node r
    assert [r["tag"] for r in ranks] == ["hello"] * 3
    meet = rh.function(pf.rendezvous).to(cluster, env=env)
    assert meet() == [[0, 1, 2], True, True]  # rank 0 heard every other rank over the network
    failing = rh.function(pf.fail_on_rank).to(cluster, env=env)
    assert failing(bad=-1) == [0, 1, 2]
    with pytest.raises(ValueError, match="rank 1 cannot go on") as info:
        failing(bad=1)
    assert "SPMD rank 1 of 3 failed (fail_on_rank_rank_1)" in info.value.__notes__


def test_spmd_per_gpu_is_refused_where_ray_reports_none(cluster, hosts):
    with pytest.raises(ConfigError, match="Ray reports no GPUs") as info:
        rh.function(pf.rank_info).to(cluster, env=rh.env(name="gpu_env", spmd="gpu"))
    assert all(f"{h.address}: 0" in str(info.value) for h in hosts.hosts)
