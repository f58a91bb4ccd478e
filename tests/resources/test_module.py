"""Classes whose instances live in a worker, used through module stubs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
import user_funcs as uf
from user_module import Accumulator

import runhouse as rh
from runhouse.exceptions import ObjectNotFound


@pytest.fixture(scope="module")
def remote_counter_cls(cluster):
    return rh.module(uf.Counter).to(cluster)


def test_init_runs_remotely_and_object_is_named(cluster, remote_counter_cls, capsys):
    counter = remote_counter_cls(start=5, name="counter_a")
    assert "Counter starting at 5" in capsys.readouterr().out  # __init__'s print streams back
    assert "counter_a" in cluster.keys()
    assert counter.incr() == 6
    assert counter.incr(by=10) == 16
    assert counter.value == 16


def test_attribute_get_and_set(remote_counter_cls):
    counter = remote_counter_cls(start=1, step=2, name="counter_b")
    counter.value = 100
    assert counter.value == 100
    assert counter.doubled == 200  # a property is read on the live object
    assert counter.incr() == 102
    with pytest.raises(AttributeError, match="no_such_attr"):
        _ = counter.no_such_attr


def test_class_and_static_methods(remote_counter_cls):
    assert remote_counter_cls.describe() == "class Counter (counter)"
    assert remote_counter_cls.square(7) == 49
    counter = remote_counter_cls(name="counter_c")
    assert counter.describe() == "class Counter (counter)"
    assert counter.square(3) == 9


def test_async_and_generator_methods(remote_counter_cls):
    counter = remote_counter_cls(start=0, name="counter_d")
    assert asyncio.run(counter.aincr()) == 1
    assert list(counter.countdown(3)) == [3, 2, 1]


def test_fetch_returns_a_local_copy(remote_counter_cls):
    counter = remote_counter_cls(start=3, name="counter_e")
    counter.incr()
    local = counter.fetch()
    assert isinstance(local, uf.Counter) and local.value == 4


def test_two_clients_share_the_live_object(cluster, remote_counter_cls, tmp_path):
    remote_counter_cls(start=10, name="shared_counter")
    script = tmp_path / "other_client.py"
    script.write_text(
        textwrap.dedent(f"""
        import runhouse as rh
        c = rh.cluster(name="again", host="localhost", server_port={cluster.server_port})
        counter = c.get("shared_counter", remote=True)
        print(counter.incr(by=5))
    """)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "15"
    assert rh.module(name="shared_counter", system=cluster).value == 15


def test_class_that_takes_a_name_argument_still_gets_it(cluster):
    named = rh.module(uf.Named).to(cluster)(name="widget", size=3)
    assert named.describe() == "widget:3"
    assert "widget" in cluster.keys()  # the key and the init argument agree


def test_rh_module_subclass(cluster):
    local = Accumulator(start=2)
    assert local.add(1) == 3  # an ordinary local object until sent
    remote = Accumulator(start=10).to(cluster, name="acc")
    assert remote.add(5) == 15
    assert remote.total == 15
    assert cluster.get("acc", remote=True).add(1) == 16


def test_missing_object_is_a_clear_error(cluster):
    with pytest.raises(ObjectNotFound, match="no object named 'never_made'"):
        cluster.get("never_made", remote=True)
