"""Ray across three SSH test hosts (network namespaces with their own sshd and home, see
tests/sshhosts.py): Ray installed from the package index the test serves, a head and two workers
started, a second bring-up joining instead of starting again, a cluster we did not start joined and
left running, and stop() stopping exactly what we started. The hosts share this machine's pid
namespace, so the test checks processes by pid here."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path

import psutil
import pytest
import sshlab

from runhouse.compute.raynodes import RAY_REQUIREMENT, RayHost, RayNodes, RayOptions
from runhouse.compute.ssh import SSHCreds, SSHPool
from runhouse.exceptions import SSHError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MB = 1024 * 1024
# the Ray the hosts get: the extra's range by default; RH_TEST_RAY="ray==2.56.0" tests another in it
RAY = os.environ.get("RH_TEST_RAY", RAY_REQUIREMENT)


@pytest.fixture(scope="module")
def hosts():
    with sshlab.lab(n=3, index_extra=(RAY,)) as (made, _url):
        made.route_between_hosts()  # Ray's workers talk to the head host to host
        yield made


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    made = SSHPool(tmp_path_factory.mktemp("ray-ssh") / "known_hosts")
    yield made
    made.close_all()


def _ray_hosts(hosts):
    creds = SSHCreds("root", str(hosts.private_key))
    return [RayHost(h.address, creds, name=h.name) for h in hosts.hosts]


def _nodes(hosts, pool, port, lines=None):
    options = RayOptions(port=port, num_cpus=1, object_store_memory=100 * MB, requirement=RAY)
    progress = lines.append if lines is not None else (lambda _line: None)
    return RayNodes(_ray_hosts(hosts), pool, options, progress=progress)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` on this machine (the hosts share its pid namespace)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == sid:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    return found


def _alive_addresses(nodes):
    return sorted(n.address for n in nodes.nodes() if n.alive)


def test_head_and_two_workers_come_up_a_second_up_joins_and_stop_ends_ours(hosts, pool):
    lines: list[str] = []
    nodes = _nodes(hosts, pool, 6390, lines)
    addresses = sorted(h.address for h in hosts.hosts)
    started: dict[str, list[int]] = {}
    try:
        began = time.monotonic()
        report = nodes.up()
        print(f"first up: {time.monotonic() - began:.1f} s")
        assert report.head_is_ours
        assert report.gcs_address == f"{hosts.hosts[0].address}:6390"
        assert report.actions == {"host0": "started head", "host1": "joined", "host2": "joined"}
        for name in ("host0", "host1", "host2"):  # every host's progress, prefixed with its name
            assert any(line.startswith(f"[{name}] installing {RAY} into ~/.rh/venvs/") for line in lines)
            assert any(line.startswith(f"[{name}] ray: ") for line in lines)
            assert any(line.startswith(f"[{name}] Ray is up (pids ") for line in lines)

        listed = [n for n in nodes.nodes() if n.alive]
        assert sorted(n.address for n in listed) == addresses
        assert [n.address for n in listed if n.is_head] == [hosts.hosts[0].address]
        assert all(n.cpus == 1.0 and n.gpus == 0.0 and n.memory > 0 for n in listed)

        started = nodes.started()
        assert set(started) == {"host0", "host1", "host2"}
        for name, pids in started.items():
            assert pids and all(_running(pid) for pid in pids), name

        # another client (a fresh object) bringing the same hosts up joins the running cluster
        began = time.monotonic()
        again = _nodes(hosts, pool, 6390).up()
        print(f"second up: {time.monotonic() - began:.1f} s")
        assert again.head_is_ours
        assert again.actions == {
            "host0": "already a node",
            "host1": "already a node",
            "host2": "already a node",
        }
        assert _alive_addresses(nodes) == addresses  # still three nodes, one head
        assert nodes.started() == started  # nothing new was started anywhere
    finally:
        began = time.monotonic()
        stopped = nodes.stop()
        print(f"stop: {time.monotonic() - began:.1f} s")
    assert {name: sorted(pids) for name, pids in stopped.items()} == {
        name: sorted(pids) for name, pids in started.items()
    }
    for name, pids in started.items():
        assert not [pid for pid in pids if _running(pid)], name
    assert nodes.started() == {"host0": [], "host1": [], "host2": []}
    assert nodes.stop() == {"host0": [], "host1": [], "host2": []}  # stopping again is a no-op


def _start_ray_by_hand(hosts, port: int) -> int:
    """A Ray head on host0 that runhouse did not start (the host owner's); returns its pid."""
    host = hosts.hosts[0]
    (ray,) = Path(host.home).glob(".rh/venvs/*/bin/ray")
    command = (
        f"cd /tmp; RAY_USAGE_STATS_ENABLED=0 setsid {ray} start --block --head --port {port} "
        f"--node-ip-address {host.address} --num-cpus 1 --object-store-memory {100 * MB} "
        f"--include-dashboard=false --disable-usage-stats --temp-dir /tmp/rh-ray-byhand-{hosts.tag} "
        f"> {host.home}/byhand.log 2>&1 < /dev/null & echo $!"
    )
    done = hosts.ssh(host, command)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert _running(pid), (Path(host.home) / "byhand.log").read_text()[-2000:]
        log = (Path(host.home) / "byhand.log").read_text(errors="replace")
        if "Ray runtime started" in log:
            with socket.create_connection((host.address, port), timeout=2):
                return pid
        time.sleep(0.3)
    raise AssertionError("the hand-started Ray head did not come up")


def test_joins_a_ray_cluster_it_did_not_start_and_leaves_it_running(hosts, pool):
    nodes = _nodes(hosts, pool, 6379)  # Ray's default port, where a host owner's cluster would be
    nodes.install()
    by_hand = _start_ray_by_hand(hosts, 6379)
    theirs = _session_pids(by_hand)
    try:
        report = nodes.up()
        assert not report.head_is_ours
        assert report.actions == {"host0": "already a node", "host1": "joined", "host2": "joined"}
        assert _alive_addresses(nodes) == sorted(h.address for h in hosts.hosts)
        ours = nodes.started()
        assert ours["host0"] == [] and ours["host1"] and ours["host2"]

        stopped = nodes.stop()
        assert stopped["host0"] == []
        for name in ("host1", "host2"):
            assert sorted(stopped[name]) == sorted(ours[name])
            assert not [pid for pid in ours[name] if _running(pid)]
        assert all(_running(pid) for pid in theirs)  # the owner's head: every one of its processes
        assert _alive_addresses(nodes) == [hosts.hosts[0].address]  # and it still serves
    finally:
        for pid in _session_pids(by_hand):  # the test started it: the test stops it, by pid
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        shutil.rmtree(f"/tmp/rh-ray-byhand-{hosts.tag}", ignore_errors=True)


def test_a_failing_host_names_itself_and_its_step(hosts, pool):
    creds = SSHCreds("root", str(hosts.private_key))
    good, other = hosts.hosts[0], hosts.hosts[1]
    unreachable = hosts.unreachable_address()
    nodes = RayNodes(
        [
            RayHost(good.address, creds, name="good"),
            RayHost(other.address, creds, python="/nowhere/python3", name="nopython"),
            RayHost(unreachable, creds, name="gone"),
        ],
        pool,
        progress=lambda _line: None,
    )
    with pytest.raises(SSHError) as raised:
        nodes.up()
    message = str(raised.value)
    assert "[good]" not in message
    assert f"[nopython] step 'find python' failed on root@{other.address}:22" in message
    assert f"[gone] cannot reach root@{unreachable}:22 (step: connect)" in message
