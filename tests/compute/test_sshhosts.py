"""Tests of the SSH test hosts (tests/sshhosts.py): logins, isolation, unreachable hosts, cleanup."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sshhosts
from sshhosts import Host, TestHosts


@pytest.fixture
def sshpass() -> None:
    """Password logins need sshpass: skipped without it, failed under CI=true."""
    sshhosts.require(("sshpass",))


NEEDS_SSHPASS = pytest.mark.usefixtures("sshpass")


@pytest.fixture(scope="session")
def ssh_hosts() -> Iterator[TestHosts]:
    sshhosts.require()
    with TestHosts(n=2) as hosts:
        yield hosts


@pytest.fixture(params=[0, 1], ids=["host0", "host1"])
def host(request: pytest.FixtureRequest, ssh_hosts: TestHosts) -> Host:
    index: int = request.param
    return ssh_hosts.hosts[index]


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def routes() -> str:
    return subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout


def assert_all_gone(hosts: TestHosts, other_pids: Sequence[int] = ()) -> None:
    """No namespace, link, route, temp dir or process of this run is left."""
    assert hosts.tag not in netns_list()
    assert not any(link_exists(f"rh{hosts.tag}h{i}") for i in range(hosts.n))
    for pid in [p.pid for p in hosts._sshds] + list(other_pids):
        assert not pid_alive(pid), pid
    assert hosts.tmpdir is None or not hosts.tmpdir.exists()
    with pytest.raises(KeyError):
        pwd.getpwnam(hosts.password_user)  # the run's own user is deleted
    assert not Path("/home", hosts.password_user).exists()
    left = routes()
    assert f"rh{hosts.tag}" not in left
    assert not any(f"{h.gateway} " in left or f"{h.address} " in left for h in hosts.hosts)


def test_root_key_login(ssh_hosts: TestHosts, host: Host) -> None:
    proc = ssh_hosts.ssh(host, "echo ok; id -u")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "0"]


def test_hosts_are_distinct_addresses(ssh_hosts: TestHosts) -> None:
    addresses = [h.address for h in ssh_hosts.hosts]
    assert len(set(addresses)) == 2
    assert len({h.netns for h in ssh_hosts.hosts}) == 2
    assert all(len(h.root_link) <= 15 and len(h.ns_link) <= 15 for h in ssh_hosts.hosts)


def test_host_is_its_own_network_namespace(ssh_hosts: TestHosts, host: Host) -> None:
    proc = ssh_hosts.ssh(host, "ip netns identify $$; ip -4 -o addr show")
    assert proc.returncode == 0, proc.stderr
    first, rest = proc.stdout.split("\n", 1)
    assert first == host.netns
    assert f"inet {host.address}/30" in rest
    others = [h.address for h in ssh_hosts.hosts if h is not host]
    assert not any(f"inet {a}/" in rest for a in others)
    assert "192.0.2." not in rest and "eth0" not in rest


def test_loopback_inside_is_not_the_root_loopback(ssh_hosts: TestHosts, host: Host) -> None:
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()\n"
        "    print('reached')\n"
        "except OSError as e:\n"
        "    print('refused', type(e).__name__)\n"
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = str(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
            pass  # reachable from the root namespace
        inside = ssh_hosts.netns_exec(host, [sys.executable, "-c", probe, "127.0.0.1", port])
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == "refused ConnectionRefusedError"


def test_host_reaches_root_namespace_through_gateway(ssh_hosts: TestHosts, host: Host) -> None:
    with socket.socket() as listener:
        listener.bind((host.gateway, 0))
        listener.listen()
        port = str(listener.getsockname()[1])
        code = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)"
        inside = ssh_hosts.netns_exec(host, [sys.executable, "-c", code, host.gateway, port])
    assert inside.returncode == 0, inside.stderr


@NEEDS_SSHPASS
def test_password_login(ssh_hosts: TestHosts, host: Host) -> None:
    proc = subprocess.run(
        ["sshpass", "-p", ssh_hosts.password, "ssh", "-p", str(host.port),
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
         f"{ssh_hosts.password_user}@{host.address}", "id -un; echo $HOME; test -d $HOME && echo home"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    user, home, exists = proc.stdout.split()
    assert user == ssh_hosts.password_user and exists == "home"


@NEEDS_SSHPASS
def test_password_login_with_helper(ssh_hosts: TestHosts) -> None:
    host = ssh_hosts.hosts[0]
    proc = ssh_hosts.ssh(host, "id -un", user=ssh_hosts.password_user, password=ssh_hosts.password)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ssh_hosts.password_user


@NEEDS_SSHPASS
def test_wrong_password_fails(ssh_hosts: TestHosts) -> None:
    host = ssh_hosts.hosts[0]
    proc = ssh_hosts.ssh(host, "true", user=ssh_hosts.password_user, password=ssh_hosts.password + "x")
    assert proc.returncode != 0
    assert "Permission denied" in proc.stderr


@NEEDS_SSHPASS
def test_root_cannot_log_in_with_a_password(ssh_hosts: TestHosts) -> None:
    # The server's answer lists the methods it still allows: for root that is publickey only,
    # so no password (right or wrong) could be tried at all.
    host = ssh_hosts.hosts[0]
    root = ssh_hosts.ssh(host, "true", user="root", password="anything")
    assert root.returncode != 0
    assert "Permission denied (publickey)" in root.stderr
    other = ssh_hosts.ssh(host, "true", user=ssh_hosts.password_user, password="wrong")
    assert "Permission denied (publickey,password)" in other.stderr


def test_password_user_can_use_the_key_too(ssh_hosts: TestHosts) -> None:
    proc = ssh_hosts.ssh(ssh_hosts.hosts[1], "id -un", user=ssh_hosts.password_user)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ssh_hosts.password_user


def test_unreachable_address_fails_fast(ssh_hosts: TestHosts) -> None:
    address = ssh_hosts.unreachable_address()
    assert address not in {h.address for h in ssh_hosts.hosts} | {h.gateway for h in ssh_hosts.hosts}
    with pytest.raises(OSError) as refused:
        socket.create_connection((address, 22), timeout=5)
    assert not isinstance(refused.value, TimeoutError)  # refused by the route, not a timeout
    proc = ssh_hosts.ssh(Host(**{**vars(ssh_hosts.hosts[0]), "address": address}), "true")
    assert proc.returncode == 255
    assert "No route to host" in proc.stderr


def test_sshd_logs_to_a_file_per_host(ssh_hosts: TestHosts, host: Host) -> None:
    assert "Server listening on " + host.address in host.sshd_log.read_text()


def test_teardown_removes_everything_even_processes_started_over_ssh() -> None:
    sshhosts.require()
    with TestHosts(n=1) as hosts:
        assert hosts.password_user == f"rht{hosts.tag}"
        leftover = hosts.ssh(
            hosts.hosts[0], "nohup sleep 300 >/dev/null 2>&1 & echo $!", user=hosts.password_user
        )
        assert leftover.returncode == 0, leftover.stderr
        sleeper = int(leftover.stdout.strip())
        assert pid_alive(sleeper)
        assert hosts.hosts[0].netns in netns_list()
        assert link_exists(hosts.hosts[0].root_link)
    assert_all_gone(hosts, [sleeper])
    hosts.close()  # a second close is a no-op


class FailsAfterHosts(TestHosts):
    __test__ = False

    def _add_unreachable_route(self) -> None:
        raise RuntimeError("boom")


def test_failed_setup_cleans_up_what_it_made() -> None:
    sshhosts.require()
    hosts = FailsAfterHosts(n=2)
    with pytest.raises(RuntimeError, match="boom"):
        hosts.start()
    assert len(hosts.hosts) == 2  # namespaces, links and sshds were made before the failure
    assert_all_gone(hosts)


def test_skip_reason_names_a_missing_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        assert "root" in (sshhosts.skip_reason() or "")
    else:
        assert "no-such-tool-xyz" in (sshhosts.skip_reason(extra_tools=["no-such-tool-xyz"]) or "")
        which = sshhosts.shutil.which
        monkeypatch.setattr(sshhosts.shutil, "which", lambda tool: None if tool == "rsync" else which(tool))
        assert "(apt-get install rsync)" in (sshhosts.skip_reason(extra_tools=["rsync"]) or "")


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_prerequisite_fails_under_ci_and_skips_elsewhere(
    ci: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="no-such-tool-xyz|root"):
        sshhosts.require(["no-such-tool-xyz"])


def test_each_host_has_its_own_home_for_root(ssh_hosts: TestHosts) -> None:
    """What tests do on a host as root stays in that host's folder, not in this machine's home."""
    homes = [ssh_hosts.ssh(h, "echo $HOME; cd && pwd -P").stdout.split() for h in ssh_hosts.hosts]
    assert homes == [[str(h.home), str(h.home.resolve())] for h in ssh_hosts.hosts]
    assert all(h.home.is_relative_to(ssh_hosts.tmpdir) for h in ssh_hosts.hosts)
    python = ssh_hosts.ssh(ssh_hosts.hosts[0], "python3 -c 'import pathlib; print(pathlib.Path.home())'")
    assert python.stdout.strip() == str(ssh_hosts.hosts[0].home)


def test_a_host_without_sftp_refuses_the_subsystem() -> None:
    sshhosts.require()
    with TestHosts(n=1, sftp=False) as hosts:
        host = hosts.hosts[0]
        assert "Subsystem sftp" not in host.sshd_config.read_text()
        sftp = subprocess.run(
            ["sftp", "-b", "-", "-P", str(host.port), "-i", str(hosts.private_key),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
             f"root@{host.address}"],
            input="pwd\n", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert sftp.returncode != 0
        assert hosts.ssh(host, "echo exec-works").stdout.strip() == "exec-works"


@NEEDS_SSHPASS
def test_named_password_user_is_kept_and_repassworded() -> None:
    sshhosts.require()
    name = f"rhtfix{os.getpid() % 100000}"
    try:
        with TestHosts(n=1, password_user=name) as hosts:
            login = hosts.ssh(hosts.hosts[0], "id -un", user=name, password=hosts.password)
            assert login.stdout.strip() == name, login.stderr
        assert pwd.getpwnam(name).pw_name == name  # kept for the next run
        with TestHosts(n=1, password_user=name) as again:
            assert again.password != hosts.password
            old = again.ssh(again.hosts[0], "true", user=name, password=hosts.password)
            assert old.returncode != 0  # the previous run's password no longer works
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)
