"""``rh.env(compute=...)`` on a three-host cluster (network namespaces with their own sshd, home and
address, see tests/sshhosts.py): Ray places the env's worker, the worker runs on that host (its
addresses, its home) and connects back to the head's daemon, calls keep every semantic of a local
worker, a request no node can hold fails ``.to()`` naming what is missing and what the nodes have,
and the daemon's worker listener closes connections that do not authenticate before reading them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pickle
import socket
import struct
from pathlib import Path

import placed_funcs as pf
import pytest
import sshlab
import user_funcs as uf
from conftest import free_port

import runhouse as rh
from runhouse.compute import raycluster
from runhouse.compute.raynodes import RayOptions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MB = 1024 * 1024


@pytest.fixture(scope="module")
def hosts():
    with sshlab.ray_lab(n=3) as made:
        yield made


@pytest.fixture(scope="module")
def cluster(hosts):
    # one CPU and a small object store per node (three nodes share this machine); the third host
    # alone has the custom resource "tpu_slice"
    before = raycluster.RAY_OPTIONS
    raycluster.RAY_OPTIONS = RayOptions(num_cpus=1, object_store_memory=100 * MB)
    try:
        made = rh.cluster(
            name="placed",
            host=[h.address for h in hosts.hosts],
            ssh_creds={"ssh_user": "root", "ssh_private_key": str(hosts.private_key)},
            server_port=free_port(),
        )
        ray_hosts = made._daemon.ray.hosts
        ray_hosts[2] = dataclasses.replace(ray_hosts[2], resources=(("tpu_slice", 2.0),))
        made.up()
        yield made
        made.teardown()
    finally:
        raycluster.RAY_OPTIONS = before


def _on(cluster, env):
    return rh.function(pf.where).to(cluster, env=env)()


def test_envs_placed_by_node_index_run_on_those_hosts(cluster, hosts):
    for i in (1, 2):
        host = hosts.hosts[i]
        env = rh.env(name=f"on_node_{i}", compute={"node_idx": i})
        seen = _on(cluster, env)
        assert host.address in seen["addresses"], (i, seen)
        assert seen["home"] == str(host.home)
        written = rh.function(pf.write_home_file).to(cluster, env=env)("placed.txt", f"from node {i}")
        assert (host.home / "placed.txt").read_text() == f"from node {i}"
        assert written == str(host.home / "placed.txt")
    head = _on(cluster, None)  # the default env stays on the head
    assert hosts.hosts[0].address in head["addresses"]

    nodes = {n["address"]: n for n in cluster.status()["nodes"] if n["alive"]}
    assert sorted(nodes) == sorted(h.address for h in hosts.hosts)
    for i in (1, 2):
        node = nodes[hosts.hosts[i].address]
        assert [w["env"] for w in node["workers"]] == [f"on_node_{i}"]
        assert node["workers"][0]["pid"] and node["cpus"] == 1.0 and node["memory"] > 0
        assert node["nvidia_smi"] is None or isinstance(node["nvidia_smi"], list)  # no GPUs here
    head_node = nodes[hosts.hosts[0].address]
    assert head_node["is_head"] and "default_env" in [w["env"] for w in head_node["workers"]]

    # `runhouse status` on the head shows the same (RH_PORT in the command's env names the daemon)
    prefix = rh.function(uf.python_prefix).to(cluster)()
    (code, out, err), *_ = cluster.run([f"COLUMNS=250 {prefix}/bin/python -m runhouse.cli status"])
    assert code == 0, err
    assert "Nodes" in out and all(h.address in out for h in hosts.hosts), out
    assert "on_node_1: " in out and "on_node_2: " in out, out


def test_a_custom_resource_places_the_worker_on_the_host_that_has_it(cluster, hosts):
    env = rh.env(name="needs_tpu", compute={"tpu_slice": 1})
    assert hosts.hosts[2].address in _on(cluster, env)["addresses"]


def test_a_request_no_node_can_hold_fails_naming_what_is_missing(cluster, hosts):
    addresses = [h.address for h in hosts.hosts]
    with pytest.raises(rh.BadRequest) as raised:
        rh.env(name="wants_gpu", compute={"GPU": 1}).to(cluster)
    message = str(raised.value)
    assert "GPU 1 asked, no node has any" in message
    assert all(f"{a}: CPU 1" in message for a in addresses), message

    with pytest.raises(rh.BadRequest, match=r"CPU 8 asked, the most any node has is 1"):
        rh.env(name="wants_cpus", compute={"CPU": 8}).to(cluster)
    with pytest.raises(rh.BadRequest, match=r"tpu_slice 3 asked, the most any node has is 2"):
        rh.env(name="wants_tpus", compute={"tpu_slice": 3}).to(cluster)
    with pytest.raises(rh.BadRequest, match=r"node_idx'\]=5 is not a host of this cluster: it has 3"):
        rh.env(name="no_such_node", compute={"node_idx": 5}).to(cluster)
    with pytest.raises(rh.BadRequest, match=r"tpu_slice 1 asked, no node has any"):
        rh.env(name="tpu_on_1", compute={"node_idx": 1, "tpu_slice": 1}).to(cluster)
    # nothing was left behind: the envs do not exist, and the cluster still serves
    names = [e["name"] for e in cluster.client.envs()]
    assert not {"wants_gpu", "wants_cpus", "wants_tpus", "no_such_node", "tpu_on_1"} & set(names)
    assert rh.function(uf.add).to(cluster)(1, 2) == 3


def test_an_env_built_on_its_node_reports_a_failed_install_naming_the_node(cluster, hosts):
    broken = rh.env(name="broken_reqs", reqs=["no-such-package-rh-test"], compute={"node_idx": 2})
    with pytest.raises(rh.EnvSetupError) as raised:
        broken.to(cluster)
    assert f"on node {hosts.hosts[2].address}" in str(raised.value)
    assert "no-such-package-rh-test" in str(raised.value)
    assert "broken_reqs" not in [e["name"] for e in cluster.client.envs()]
    # the same env with a package the node's index has builds there (already installed: a no-op)
    fixed = rh.env(name="broken_reqs", reqs=["pyyaml"], compute={"node_idx": 2})
    assert rh.function(uf.add).to(cluster, env=fixed)(1, 1) == 2


def test_calls_to_a_worker_on_another_node_keep_their_semantics(cluster, hosts, capfd):
    env = rh.env(name="semantics", compute={"node_idx": 1}, env_vars={"PLACED_VAR": "yes"})
    assert rh.function(uf.get_env).to(cluster, env=env)("PLACED_VAR") == "yes"

    assert rh.function(uf.tick).to(cluster, env=env)(3, interval=0.05) == "done"  # prints stream back
    out = capfd.readouterr().out
    assert all(f"tick {i}" in out for i in range(3)), out

    with pytest.raises(ValueError, match="bad input on node 1"):
        rh.function(uf.fail).to(cluster, env=env)("bad input on node 1")
    assert list(rh.function(uf.slow_items).to(cluster, env=env)(4, interval=0.01)) == [0, 1, 2, 3]
    assert asyncio.run(rh.function(uf.async_add).to(cluster, env=env)(2, 5)) == 7

    sleeper = rh.function(uf.sleep_for).to(cluster, env=env)
    with pytest.raises(TimeoutError, match="timed out after 1 s"):
        sleeper(30, timeout=1)
    counter = rh.module(uf.Counter).to(cluster, env=env)(start=5, name="placed_counter")
    counter.incr()
    assert counter.value == 6
    # the worker is still there, and still on host 1
    assert hosts.hosts[1].address in _on(cluster, env)["addresses"]


def test_large_payloads_cross_to_another_node_intact(cluster):
    env = rh.env(name="payloads", compute={"node_idx": 2})
    echo = rh.function(pf.array_round_trip).to(cluster, env=env)
    data = pf.Blob(os.urandom(40 * MB))  # out of band (pickle protocol 5), as arrays are
    assert echo(data) == data


def _listener(cluster, hosts) -> tuple[str, int]:
    """The daemon's worker listener: the daemon's one listening TCP socket on the head's cluster
    address (read from /proc: the daemon runs in the head's network namespace, not ours)."""
    pid = int(cluster.status()["server_pid"])
    head = hosts.hosts[0].address
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    want = socket.inet_aton(head)[::-1].hex().upper()  # /proc/net/tcp writes addresses little-endian
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if fields[3] == "0A" and fields[9] in inodes and address == want:  # 0A: LISTEN
            found.append((head, int(port, 16)))
    assert len(found) == 1, found
    return found[0]


class _Touch:
    """A pickle that creates a file when it is loaded: proof that someone unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _closed_by_peer(sock: socket.socket, timeout: float = 15.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_the_worker_listener_drops_connections_that_do_not_authenticate(cluster, hosts, tmp_path):
    rh.env(name="listener_user", compute={"node_idx": 1}).to(cluster)  # the listener is open
    address = _listener(cluster, hosts)
    marker = tmp_path / "unpickled"
    header = pickle.dumps(_Touch(str(marker)), protocol=5)
    frame = struct.pack(">IQ", len(header), 0) + header
    for sent in (
        frame * 4,  # a channel frame straight away: must never be unpickled
        b"RHW1" + os.urandom(48),  # the right magic, an unknown worker id
        b"GET / HTTP/1.1\r\n\r\n" + b"x" * 64,
        b"",  # nothing at all: closed after the authentication timeout
    ):
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(sent)
            assert _closed_by_peer(sock), sent[:20]
    assert not marker.exists()
    # the placed worker still serves, and new placements still connect
    assert rh.function(uf.add).to(cluster, env="listener_user")(2, 2) == 4
    assert (
        hosts.hosts[2].address
        in _on(cluster, rh.env(name="after_probe", compute={"node_idx": 2}))["addresses"]
    )
