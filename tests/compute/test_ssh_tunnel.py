"""The tunnel to an SSH cluster's daemon: an ``ssh -N -L`` process of ours (compute/forward.py),
against a real sshd host (a network namespace) that installs runhouse from an index served here.

How fast it is: bench/tunnel.py."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import sshlab
import user_funcs as uf
from conftest import ASSETS, free_port

import runhouse as rh
from runhouse.compute.forward import OpenSSHTunnel
from runhouse.compute.ssh import SSHCreds, pool_for
from runhouse.exceptions import ConnectionError_

pytestmark = pytest.mark.slow

AUTH_TRACES = ("Accepted ", "Failed ", "authenticating user", "Invalid user", "Postponed ")


@pytest.fixture(scope="module")
def hosts():
    with sshlab.lab(n=1) as (made, _):
        yield made


def _creds(hosts):
    return {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}


def _cluster(hosts, name, port):
    return rh.cluster(name=name, host=[hosts.hosts[0].address], ssh_creds=_creds(hosts), server_port=port)


@pytest.fixture(scope="module")
def lab(hosts):
    cluster = _cluster(hosts, "tunnel-lab", free_port()).up_if_not()
    yield cluster
    cluster.teardown()


def _tunnel(cluster) -> OpenSSHTunnel:
    remote = cluster._remote
    tunnel = remote.session.tunnel(remote.port)
    assert tunnel is not None
    return tunnel


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_calls_go_through_an_ssh_process_listening_on_loopback_only(lab, rh_home):
    add = rh.function(uf.add).to(lab)
    assert add(1, 2) == 3
    tunnel = _tunnel(lab)
    assert tunnel.kind == "openssh" and tunnel.pid is not None
    ssh = psutil.Process(tunnel.pid)
    assert ssh.name() == "ssh"  # exec'd in place: the pid we started is ssh itself
    argv = ssh.cmdline()
    assert f"127.0.0.1:{tunnel.local_port}:127.0.0.1:{lab.server_port}" in argv
    assert "StrictHostKeyChecking=yes" in argv  # the key asyncssh checked, or nothing
    assert f"UserKnownHostsFile={rh_home / 'known_hosts'}" in argv
    assert "BatchMode=yes" in argv  # never a prompt that would hang a call
    assert lab.client.endpoint.port == tunnel.local_port
    listening = [c.laddr for c in ssh.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening == [("127.0.0.1", tunnel.local_port)]  # nothing on other addresses, nor IPv6
    assert add(20, 22) == 42


def test_a_killed_forward_comes_back_on_the_same_port(lab):
    add = rh.function(uf.add).to(lab)
    assert add(1, 1) == 2
    tunnel = _tunnel(lab)
    old_pid, port, restarts = tunnel.pid, tunnel.local_port, tunnel.restarts
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    began = time.monotonic()
    try:  # right away: the call works (the forward is back) or fails at once, saying so
        assert add(2, 2) == 4
    except ConnectionError_ as e:
        assert f"127.0.0.1:{port}" in str(e)
    assert time.monotonic() - began < 10, "a call during the restart must not hang"
    deadline = time.monotonic() + 30
    while tunnel.pid in (None, old_pid):
        assert time.monotonic() < deadline, "the forward was not restarted"
        time.sleep(0.05)
    assert tunnel.restarts == restarts + 1 and tunnel.local_port == port
    assert add(3, 4) == 7  # the client kept its address
    assert lab.client.endpoint.port == port


async def _awaited(call):
    return await call


def test_a_port_taken_while_the_forward_is_down_never_gets_a_request(lab):
    """Between an ssh dying and its restart the local port is free. Someone else who binds it then
    must not receive the next request (it carries the cluster token): the client checks that the
    tunnel is serving before it connects, and refuses instead. Once the port is free again the
    forward comes back on it and calls go through."""
    add = rh.function(uf.add).to(lab)
    assert add(1, 1) == 2
    tunnel = _tunnel(lab)
    old_pid, port = tunnel.pid, tunnel.local_port
    assert old_pid is not None
    stranger = socket.socket()
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    os.kill(old_pid, signal.SIGKILL)
    assert _gone(old_pid)
    deadline = time.monotonic() + 5
    while True:  # take the port before the forward's restart does (it waits 0.1 s first)
        try:
            stranger.bind(("127.0.0.1", port))
            break
        except OSError:
            assert time.monotonic() < deadline, "could not take the freed port"
            time.sleep(0.001)
    stranger.listen()
    stranger.settimeout(0.5)
    try:
        for call in (lambda: add(2, 2), lambda: asyncio.run(_awaited(add.run_async(2, 2)))):
            with pytest.raises(ConnectionError_, match="is down"):
                call()
        with pytest.raises(socket.timeout):
            conn, _ = stranger.accept()  # nobody connected to the stranger
            conn.settimeout(0.5)
            raise AssertionError(f"the stranger's port got a connection: {conn.recv(4096)!r}")
    finally:
        stranger.close()
    deadline = time.monotonic() + 30
    while True:  # the restarts that failed while the port was taken give way to one that works
        try:
            assert add(3, 4) == 7
            break
        except ConnectionError_:
            assert time.monotonic() < deadline, "the forward did not come back once the port was free"
            time.sleep(0.2)
    assert tunnel.local_port == port and lab.client.endpoint.port == port


def test_teardown_stops_the_ssh_process(hosts):
    cluster = _cluster(hosts, "tunnel-teardown", free_port()).up_if_not()
    assert rh.function(uf.add).to(cluster)(5, 5) == 10
    pid = _tunnel(cluster).pid
    assert pid is not None
    cluster.teardown()
    assert _gone(pid), "teardown must stop the tunnel's ssh process"
    assert cluster._remote.session.tunnel(cluster.server_port) is None


EXITING = """
import os, signal, sys
import runhouse as rh, user_funcs as uf
lab = rh.cluster(name="again", host=[sys.argv[1]], ssh_creds={"ssh_user": "root", "ssh_private_key": sys.argv[2]},
                 server_port=int(sys.argv[3])).up_if_not()
assert rh.function(uf.add).to(lab, name="add_in_child")(1, 2) == 3
remote = lab._remote
print(remote.session.tunnel(remote.port).pid, flush=True)
if sys.argv[4] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit: the kernel ends the tunnel (PR_SET_PDEATHSIG)
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_the_ssh_process_ends_with_the_process_that_started_it(hosts, lab, how):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ASSETS), os.environ.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-c", textwrap.dedent(EXITING), hosts.hosts[0].address, str(hosts.private_key)]
    done = subprocess.run(
        [*argv, str(lab.server_port), how], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip().isdigit(), done.stderr
    assert _gone(int(done.stdout.strip())), f"the tunnel outlived its process ({how})"


ECHO = """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("up", flush=True)
while True:
    c, _ = s.accept()
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
"""


@pytest.fixture(scope="module")
def echo_port(hosts):
    """A port on the host's loopback with an echo server behind it."""
    host, port = hosts.hosts[0], free_port()
    echo = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, sys.executable, "-c", ECHO, str(port)], stdout=subprocess.PIPE
    )
    assert echo.stdout is not None and echo.stdout.readline() == b"up\n"
    yield port
    echo.kill()
    echo.wait()


def _echoes(local_port: int, text: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
        conn.sendall(text)
        return conn.recv(100) == text


def test_a_password_login_carries_the_forward_through_sshpass(hosts, rh_home, echo_port):
    session = pool_for(rh_home).session(
        hosts.hosts[0].address,
        SSHCreds.from_dict({"ssh_user": hosts.password_user, "password": hosts.password}),
    )
    local = session.forward(echo_port)
    tunnel = session.tunnel(echo_port)
    assert tunnel is not None and tunnel.kind == "openssh" and tunnel.pid is not None
    sshpass = psutil.Process(tunnel.pid)
    assert sshpass.name() == "sshpass"
    for process in (sshpass, *sshpass.children()):  # given through a pipe: in no argv, no environment
        assert hosts.password not in " ".join(process.cmdline())
        assert hosts.password not in " ".join(process.environ().values())
    (ssh,) = sshpass.children()
    assert _echoes(local, b"through sshpass")
    session.close_forward(echo_port)
    assert _gone(sshpass.pid) and _gone(ssh.pid)


def test_without_openssh_asyncssh_forwards_with_a_warning(
    hosts, rh_home, echo_port, tmp_path, monkeypatch, caplog
):
    session = pool_for(rh_home).session(hosts.hosts[0].address, SSHCreds.from_dict(_creds(hosts)))
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh to be found
    with caplog.at_level(logging.WARNING, logger="runhouse.compute.forward"):
        local = session.forward(echo_port)
    try:
        tunnel = session.tunnel(echo_port)
        assert tunnel is not None and tunnel.kind == "asyncssh" and tunnel.pid is None
        assert "using the slower asyncssh forward" in caplog.text and "no ssh command" in caplog.text
        assert _echoes(local, b"through asyncssh")
    finally:
        session.close_forward(echo_port)
    with pytest.raises(OSError):  # closed means closed
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            socket.create_connection(("127.0.0.1", local), timeout=1).close()
            time.sleep(0.1)


def test_a_forward_refuses_a_changed_host_key_before_logging_in(hosts, lab, caplog):
    """Last in this file: it gives the host a new key. The restarted ssh finds the key changed and
    stops before authenticating; after three tries the asyncssh forward, over the connection made
    (and checked) before the change, keeps the port."""
    add = rh.function(uf.add).to(lab)
    assert add(1, 2) == 3
    tunnel = _tunnel(lab)
    host = hosts.hosts[0]
    hosts.replace_host_key(host)
    start = host.sshd_log.stat().st_size
    assert tunnel.pid is not None
    with caplog.at_level(logging.WARNING, logger="runhouse.compute.forward"):
        os.kill(tunnel.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while tunnel.kind != "asyncssh":
            assert time.monotonic() < deadline, f"no fallback; the tunnel is {tunnel.kind}"
            time.sleep(0.1)
    warning = caplog.text
    assert "keeps failing" in warning and "Host key verification failed" in warning
    log = host.sshd_log.read_bytes()[start:].decode(errors="replace")
    assert "Connection from" in log  # the restarts reached sshd ...
    assert not [line for line in log.splitlines() if any(t in line for t in AUTH_TRACES)]  # ... no further
    assert add(2, 3) == 5  # on the same port
    assert lab.client.endpoint.port == tunnel.local_port
