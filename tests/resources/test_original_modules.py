"""Issue 11, points 7 and 9: module stubs behave as the original's ``rh.Module`` (0.0.35 era)
and stubs travel (pickle) into remote code."""

from __future__ import annotations

import asyncio
import pickle

import cloudpickle
import pytest
import user_funcs as uf

import runhouse as rh
from runhouse.exceptions import ConfigError


@pytest.fixture(scope="module")
def remote_cls(cluster):
    return rh.module(uf.Counter).to(cluster, name="OrigCounter")


def test_class_stub_is_a_module_with_the_originals_api(cluster, remote_cls):
    assert isinstance(remote_cls, rh.Module)
    assert remote_cls.name == "OrigCounter"
    assert remote_cls.system is cluster
    assert isinstance(remote_cls.env, rh.Env)
    assert set(remote_cls.signature()) == {"aincr", "countdown", "describe", "incr", "square"}
    incr = remote_cls.method_signature("incr")
    assert incr["signature"] == "(self, by=None)" and incr["async"] is False and incr["gen"] is False
    assert remote_cls.method_signature("countdown")["gen"] is True
    assert remote_cls.signature(rich=True)["aincr"]["async"] is True
    assert isinstance(remote_cls.refresh(), rh.Module)
    assert remote_cls.refresh().square(5) == 25


def test_instance_stub_local_remote_fetch_and_async_helpers(remote_cls):
    counter = remote_cls(start=2, name="orig_counter")
    assert isinstance(counter, rh.Module) and counter.name == "orig_counter"
    counter.incr()
    assert counter.remote.value == 3
    counter.remote.value = 7
    assert counter.fetch("value") == 7
    assert counter.local.name == "orig_counter"  # the stub's own attribute
    assert isinstance(counter.fetch(), uf.Counter)
    assert asyncio.run(counter.fetch_async("value")) == 7
    asyncio.run(counter.set_async("value", 11))
    assert counter.value == 11
    # a class stub's instance methods take an instance: a live one, or a local one sent along
    assert remote_cls.incr(counter, 4) == 15
    assert remote_cls.incr(uf.Counter(start=100)) == 101
    assert counter.value == 15
    with pytest.raises(TypeError, match="instance method"):
        remote_cls.incr()


def test_local_attributes_are_never_forwarded(cluster):
    remote = rh.module(uf.Named).to(cluster)
    obj = remote(size=3, name="named_obj")
    obj.remote.system = "the object's own system attribute"
    obj.remote.name = "renamed inside"
    assert obj.system is cluster  # the stub's, not the live object's
    assert obj.remote.system == "the object's own system attribute"
    assert obj.name == "named_obj" and obj.local.name == "named_obj"
    assert obj.remote.name == "renamed inside"
    assert obj.describe() == "renamed inside:3"
    assert "named_obj" in cluster.keys()


def test_rename_and_get_or_to(cluster, remote_cls):
    obj = remote_cls(start=1, name="to_rename")
    obj.rename("renamed_counter")
    assert obj.name == "renamed_counter"
    keys = cluster.keys()
    assert "renamed_counter" in keys and "to_rename" not in keys
    assert obj.incr() == 2
    again = rh.module(uf.Counter).get_or_to(cluster, name="OrigCounter")
    assert again.name == "OrigCounter" and again.square(3) == 9
    fresh = rh.module(uf.Counter).get_or_to(cluster, name="OrigCounterB")
    assert "OrigCounterB" in cluster.keys() and fresh.square(2) == 4


def test_factory_call_is_a_local_instance_with_to(cluster):
    local = rh.module(uf.Counter)(start=5)
    assert isinstance(local, uf.Counter)
    assert local.incr() == 6  # ran here
    remote = local.to(cluster, name="from_local")
    assert isinstance(remote, rh.Module) and remote.name == "from_local"
    assert remote.incr() == 6  # built on the cluster from the same init arguments
    assert "from_local" in cluster.keys()


def test_replicas_live_in_worker_processes_of_their_own(cluster):
    worker = rh.module(uf.Worker).to(cluster)(label="orig", name="pid_worker")
    home = worker.pid()
    replicas = worker.replicate(num_replicas=2)
    assert [r.name for r in replicas] == ["pid_worker_replica_0", "pid_worker_replica_1"]
    pids = {r.pid() for r in replicas}
    assert len(pids) == 2 and home not in pids
    assert [r.label for r in replicas] == ["orig", "orig"]  # state copied
    assert [r.calls for r in replicas] == [2, 2]  # the copy had 1 call; each replica then one more
    named = worker.replicate(num_replicas=1, names=["pid_named"], envs=[rh.env(name="pid_env")])
    assert named[0].name == "pid_named" and named[0].pid() not in pids | {home}
    with pytest.raises(ConfigError, match="names has 1 entries"):
        worker.replicate(num_replicas=2, names=["only_one"])


def test_class_replicas(cluster):
    replicas = rh.module(uf.Worker).to(cluster, name="WorkerCls").replicate(2)
    assert [r.name for r in replicas] == ["WorkerCls_replica_0", "WorkerCls_replica_1"]
    objs = [r(label=str(i), name=f"from_replica_{i}") for i, r in enumerate(replicas)]
    assert len({o.pid() for o in objs}) == 2


def test_openapi_spec_describes_the_methods(cluster):
    remote = rh.module(uf.Worker).to(cluster, name="WorkerApi")
    spec = remote(name="api_worker").openapi_spec()
    assert spec["openapi"] == "3.0.0" and spec["info"]["title"] == "api_worker"
    assert list(spec["paths"]) == ["/api_worker/pid"]
    body = spec["paths"]["/api_worker/pid"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["data"]["properties"]["kwargs"]["properties"] == {}
    fn = rh.function(uf.typed).to(cluster)
    op = fn.openapi_spec()["paths"]["/typed/call"]["post"]
    kwargs = op["requestBody"]["content"]["application/json"]["schema"]["properties"]["data"]
    kwargs = kwargs["properties"]["kwargs"]
    assert kwargs["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "string"},
        "c": {"type": "number"},
    }
    assert kwargs["required"] == ["a"] and op["summary"] == "Repeat b a times."


# -- point 9: stubs travel ------------------------------------------------------------------------


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_stubs_pickle_and_still_work(cluster, remote_cls, dumps):
    counter = remote_cls(start=0, name="pickled_counter")
    fn = rh.function(uf.add).to(cluster)
    cluster.keys()  # the cluster has a connection (thread-local state) before it is pickled
    assert "client" not in pickle.loads(dumps(cluster)).__dict__
    assert pickle.loads(dumps(counter)).incr() == 1
    assert pickle.loads(dumps(remote_cls)).square(6) == 36
    assert pickle.loads(dumps(fn))(2, 3) == 5
    assert "pickled_counter" in pickle.loads(dumps(cluster)).keys()


def test_stubs_passed_to_remote_functions_are_used_there(cluster, remote_cls):
    remote_identity = rh.function(uf.identity).to(cluster)
    remote_apply = rh.function(uf.apply).to(cluster)
    assert remote_apply(remote_identity, "through a stub") == "through a stub"
    # code on the cluster loads a stub for another function there and calls it
    rh.function(uf.add).to(cluster)
    assert rh.function(uf.call_by_name).to(cluster)(cluster, "add", 2, 3) == 5
    counter = remote_cls(start=40, name="travelling_counter")
    assert rh.function(uf.call_method).to(cluster)(counter, "incr") == 41
    assert counter.value == 41  # the remote code called the live object, not a copy
    assert "travelling_counter" in rh.function(uf.keys_of).to(cluster)(cluster)
