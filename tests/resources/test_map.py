"""fn.map / starmap in chunks and replica pools, on a local cluster (real daemon, real workers).

Multi-node spreading (a copy per node, replicas placed on nodes) is tested on three SSH hosts in
tests/compute/test_ray_parallel.py."""

from __future__ import annotations

import asyncio
import collections
import threading
import time

import parallel_funcs as pf
import pytest

import runhouse as rh
from runhouse.exceptions import ConfigError, RemoteException, RunhouseError
from runhouse.resources import mapping
from runhouse.resources.replicas import ReplicaPool


def test_a_large_map_goes_in_chunks_and_keeps_the_order(cluster):
    square = rh.function(pf.square).to(cluster)
    items = list(range(5000))
    assert mapping.chunk_size(len(items), 1) > 1  # many items per request
    assert square.map(items) == [x * x for x in items]
    assert square.starmap([(x,) for x in items[:300]]) == [x * x for x in items[:300]]
    assert square.map(items, serialization="json") == [x * x for x in items]


def test_chunks_run_in_the_functions_worker(cluster):
    where = rh.function(pf.where).to(cluster, env=rh.env(name="map_where_env"))
    seen = where.map(range(2000))
    assert [s["x"] for s in seen] == list(range(2000))
    assert {s["pid"] for s in seen} == {where()["pid"]}  # one node: the function's own worker


def test_a_failing_item_in_a_large_map_is_named_with_its_type(cluster):
    fail_at = rh.function(pf.fail_at).to(cluster)
    with pytest.raises(KeyError, match="item 1234 is bad") as info:
        fail_at.map(range(3000), [1234] * 3000)
    assert "map item 1234 of 3000 failed: fail_at(1234, 1234)" in info.value.__notes__
    with pytest.raises(KeyError) as info:
        fail_at.starmap([(x, 7) for x in range(10)])
    assert "starmap item 7 of 10 failed: fail_at(7, 7)" in info.value.__notes__


def test_an_exception_that_cannot_travel_still_names_its_item(cluster):
    remote = rh.function(pf.fail_unpicklable).to(cluster)
    with pytest.raises(RemoteException, match="unpicklable failure at 3") as info:
        remote.map(range(500))
    assert "map item 3 of 500 failed: fail_unpicklable(3)" in info.value.__notes__
    assert info.value.type_name == "parallel_funcs.Unpicklable"


def test_async_and_generator_functions_map(cluster):
    assert rh.function(pf.async_double).to(cluster).map(range(1000)) == [2 * x for x in range(1000)]
    assert rh.function(pf.countdown).to(cluster).map([3, 0, 1] * 200) == [[3, 2, 1], [], [1]] * 200


def test_a_map_chunk_runs_public_methods_only(cluster):
    from runhouse.protocol.wire import GETATTR, MAP

    square = rh.function(pf.square).to(cluster)
    client, options = cluster.client, cluster.call_options.wire()
    for method in (GETATTR, "_private", MAP, 3):
        with pytest.raises(RunhouseError, match="public method"):
            client.call(square.name, MAP, (method, [(1,)], {}), {}, options)
    with pytest.raises(RunhouseError, match="list of argument lists"):
        client.call(square.name, MAP, ("call", [1, 2], {}), {}, options)


def test_replicas_are_a_pool_that_spreads_calls(cluster):
    original = rh.module(pf.Replica).to(cluster, name="ReplicaCls")(name="replica_pool_src")
    pool = original.replicate(num_replicas=3)
    assert isinstance(pool, ReplicaPool) and isinstance(pool, list)
    assert [r.name for r in pool] == [f"replica_pool_src_replica_{i}" for i in range(3)]
    pids = [r.where() for r in pool]
    assert len(set(pids)) == 3
    # sequential calls go round robin; each replica counts its own
    served = collections.Counter(pool.where() for _ in range(9))
    assert served == {pid: 3 for pid in pids}
    assert [r.served for r in pool] == [4, 4, 4]
    # a replica busy with a long call is passed over while it lasts
    slow = threading.Thread(target=pool.hold, args=(1.5,))
    slow.start()
    deadline = time.monotonic() + 10
    while sum(pool._busy) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    busy = pool._busy.index(1)
    assert {pool.where() for _ in range(4)} == set(pids) - {pids[busy]}
    slow.join()
    # async methods, the method's own name clash with list API, and map over the pool
    got = asyncio.run(_gather(pool))
    assert set(got) == set(pids)
    assert pool.call("where") in pids
    scaled = pool.map("scale", range(3000), by=2)
    assert [x for _, x in scaled] == [2 * x for x in range(3000)]
    # items that take a while: every replica's drivers get chunks (tiny ones may all be done by two)
    assert set(pool.map("hold", [0.01] * 60)) == set(pids)
    with pytest.raises(AttributeError, match="no method 'nope'"):
        pool.map("nope", [1])
    with pytest.raises(ConfigError, match="takes no run_name"):
        pool.map("scale", [1], timeout=3)


async def _gather(pool):
    return await asyncio.gather(*(pool.async_where() for _ in range(6)))


def test_spmd_on_one_node_is_one_rank_with_its_variables(cluster):
    env = rh.env(name="spmd_local", spmd="node", env_vars={"KEEP": "me"})
    assert rh.Env.from_config(env.config()).spmd == "node"  # the option survives a config round trip
    info = rh.function(pf.rank_info).to(cluster, env=env)
    assert info.spmd_ranks == ["rank_info_rank_0"]
    assert (
        rh.Function.from_config(info.config()).spmd_ranks == info.spmd_ranks
    )  # a saved stub keeps its ranks
    [rank0] = info("t")
    assert rank0["tag"] == "t"
    assert (rank0["RANK"], rank0["LOCAL_RANK"], rank0["WORLD_SIZE"]) == ("0", "0", "1")
    assert rank0["MASTER_ADDR"] == "127.0.0.1" and int(rank0["MASTER_PORT"]) > 0
    assert rh.function(pf.rendezvous).to(cluster, env=env)() == [[0]]  # rank 0 can listen there
    assert info("again")[0]["pid"] == rank0["pid"]  # a second function did not restart the rank
    assert info("quiet", stream_logs=False)[0]["tag"] == "quiet"  # call options are not user kwargs
    with pytest.raises(ConfigError, match="remote= and run_name= do not apply"):
        info("x", run_name="r1")
    with pytest.raises(ConfigError, match="every rank of an SPMD env"):
        info.map([1, 2])
    with pytest.raises(ConfigError, match="SPMD ranks run functions"):
        rh.module(pf.Replica).to(cluster, env=env)


def test_spmd_per_gpu_is_refused_where_ray_reports_no_gpus(cluster):
    with pytest.raises(ConfigError, match="Ray reports no GPUs"):
        rh.function(pf.rank_info).to(cluster, env=rh.env(name="spmd_gpu", spmd="gpu"))
    with pytest.raises(ConfigError, match="spmd must be 'node'"):
        rh.env(name="bad", spmd="rack")
