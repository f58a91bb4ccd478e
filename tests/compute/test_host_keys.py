"""SSH host keys: checked in the key exchange, before any credential is sent, against one
OpenSSH-format known_hosts file shared by asyncssh and OpenSSH tools (ssh, rsync)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest
import sshhosts

import runhouse as rh
from runhouse.compute.hostkeys import KnownHosts
from runhouse.compute.ssh import pool_for
from runhouse.exceptions import ConfigError, SSHError

# What sshd (LogLevel VERBOSE) writes once a client has sent a user name or tried to authenticate.
AUTH_TRACES = ("Accepted ", "Failed ", "authenticating user", "Invalid user", "Postponed ")
CONNECTION = re.compile(r"Connection from \S+ port (\d+) ")
CLIENT_PORT = re.compile(r" port (\d+)\b")  # the first port a line names is the client's


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh RH_HOME (its own known_hosts and its own SSH connections) for the test."""
    path = tmp_path / "rh"
    monkeypatch.setenv("RH_HOME", str(path))
    monkeypatch.delenv("RH_SSH_HOST_KEY_POLICY", raising=False)
    yield path
    pool_for(path).close_all()


@pytest.fixture(scope="module")
def hosts():
    sshhosts.require(("sshpass", "rsync"))
    with sshhosts.TestHosts(n=1) as made:
        yield made


def _public_key(hosts, host) -> str:
    """The host's key as known_hosts names it: ``type base64`` (no comment)."""
    return " ".join(Path(f"{hosts.host_key_path(host)}.pub").read_text().split()[:2])


def _cluster(host, creds, name):
    # /nonexistent/python3: bringing it up stops right after logging in, at finding Python
    return rh.cluster(name=name, host=[host.address], ssh_creds=creds, python="/nonexistent/python3")


def _logs_in(cluster) -> None:
    with pytest.raises(SSHError, match="step 'find python' failed"):
        cluster.up_if_not()


def _sshd_log_of(host, attempt) -> str:
    """What the host's sshd logs about the connections ``attempt()`` opens, once they are over.

    Lines are kept by the client port of each connection that starts meanwhile, so what sshd
    logs late about earlier connections (a session closed by the previous test) is left out."""
    start = host.sshd_log.stat().st_size
    attempt()
    deadline = time.monotonic() + 10
    while True:
        lines = host.sshd_log.read_bytes()[start:].decode(errors="replace").splitlines()
        ports = {m.group(1) for line in lines if (m := CONNECTION.match(line))}
        ours = [line for line in lines if (m := CLIENT_PORT.search(line)) and m.group(1) in ports]
        over = any("Disconnected from" in line or "Accepted " in line for line in ours)
        if (ports and over) or time.monotonic() > deadline:
            return "\n".join(ours)
        time.sleep(0.1)


def _auth_traces(log: str, user: str) -> list[str]:
    return [line for line in log.splitlines() if user in line or any(t in line for t in AUTH_TRACES)]


# -- against real sshd hosts ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_changed_host_key_is_refused_before_the_password_is_sent(hosts, home):
    host, user = hosts.hosts[0], hosts.password_user
    creds = {"ssh_user": user, "password": hosts.password}
    _logs_in(_cluster(host, creds, "first"))  # first contact: the key is recorded
    known = home / "known_hosts"
    before = known.read_text()
    assert before == f"{host.address} {_public_key(hosts, host)}\n"
    pool_for(home).close_all()

    hosts.replace_host_key(host)  # the host was rebuilt, or someone else answers at its address

    def refused() -> None:
        with pytest.raises(SSHError) as info:
            _cluster(host, creds, "again").up_if_not()
        message = str(info.value)
        assert f"the host key of {host.address}" in message and "does not match" in message
        assert f"ssh-keygen -R '{host.address}' -f {known}" in message

    log = _sshd_log_of(host, refused)
    assert "Connection from" in log  # it reached this sshd ...
    assert _auth_traces(log, user) == []  # ... and never got as far as a user name or password
    assert "Host key is not trusted" in log  # the reason the client gave when it hung up
    assert known.read_text() == before  # the new key was not recorded

    # The fix the message gives works, and the same log shows a login when one happens.
    subprocess.run(["ssh-keygen", "-R", host.address, "-f", str(known)], check=True, capture_output=True)
    log = _sshd_log_of(host, lambda: _logs_in(_cluster(host, creds, "rebuilt")))
    assert any(f"Accepted password for {user}" in line for line in _auth_traces(log, user))
    assert _public_key(hosts, host) in known.read_text()


@pytest.mark.slow
def test_strict_policy_refuses_an_unknown_host_before_logging_in(hosts, home, monkeypatch):
    host = hosts.hosts[0]
    monkeypatch.setenv("RH_SSH_HOST_KEY_POLICY", "strict")
    creds = {"ssh_user": hosts.password_user, "password": hosts.password}
    cluster = _cluster(host, creds, "strict")
    known = home / "known_hosts"

    def refused() -> None:
        with pytest.raises(SSHError, match=rf"{host.address} is not in {known} and .* is 'strict'"):
            cluster.up_if_not()

    log = _sshd_log_of(host, refused)
    assert "Connection from" in log and _auth_traces(log, hosts.password_user) == []
    assert not known.exists() or host.address not in known.read_text()  # nothing recorded
    assert cluster.ssh("true") == 255  # OpenSSH tools are just as strict
    assert not known.exists() or host.address not in known.read_text()

    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(f"{host.address} {_public_key(hosts, host)}\n")  # the user adds the key
    _logs_in(cluster)
    assert cluster.ssh("true") == 0


@pytest.mark.slow
def test_accept_new_records_a_key_that_openssh_tools_trust(hosts, home, tmp_path):
    host = hosts.hosts[0]
    cluster = _cluster(host, {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}, "lab")
    _logs_in(cluster)
    known = home / "known_hosts"
    recorded = known.read_text()
    assert recorded == f"{host.address} {_public_key(hosts, host)}\n"
    assert oct(known.stat().st_mode & 0o777) == "0o600"

    plain_ssh = [
        "ssh", "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-i", str(hosts.private_key), "-o", "IdentitiesOnly=yes", f"root@{host.address}", "echo ok",
    ]  # fmt: skip
    done = subprocess.run(plain_ssh, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr

    command = cluster._remote.ssh_command()
    assert f"UserKnownHostsFile={known}" in command and "StrictHostKeyChecking=accept-new" in command
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a.txt").write_text("alpha")
    cluster.rsync(str(tmp_path / "up"), "/tmp/rh-host-keys-test", up=True, contents=True)
    assert cluster.ssh("test -f /tmp/rh-host-keys-test/a.txt") == 0
    assert known.read_text() == recorded  # ssh and rsync found the host in the same file


@pytest.mark.slow
def test_a_key_that_ssh_recorded_is_trusted_by_the_cluster(hosts, home, monkeypatch):
    host = hosts.hosts[0]
    creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
    assert _cluster(host, creds, "shell-first").ssh("true") == 0  # OpenSSH accepts and records it
    known = home / "known_hosts"
    assert _public_key(hosts, host) in known.read_text()
    monkeypatch.setenv("RH_SSH_HOST_KEY_POLICY", "strict")
    _logs_in(_cluster(host, creds, "strict-after-shell"))


# -- the file and the policy, without a host ------------------------------------------------------


def _key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def test_an_unknown_policy_is_refused_with_the_valid_ones(home, monkeypatch):
    monkeypatch.setenv("RH_SSH_HOST_KEY_POLICY", "yes")
    with pytest.raises(
        ConfigError, match=r"ssh_host_key_policy must be one of accept-new, strict, got 'yes'"
    ):
        rh.cluster(name="c", host=["192.0.2.1"], ssh_creds={"ssh_user": "me"})


def test_strict_policy_makes_ssh_strict_too(home, monkeypatch):
    monkeypatch.setenv("RH_SSH_HOST_KEY_POLICY", "strict")
    command = rh.cluster(name="c", host=["192.0.2.1"], ssh_creds={"ssh_user": "me"})._remote.ssh_command()
    assert "StrictHostKeyChecking=yes" in command
    assert f"UserKnownHostsFile={home / 'known_hosts'}" in command


def test_lines_are_in_openssh_format_with_the_port(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text("# a comment\nnot a valid line\nelsewhere ssh-ed25519")  # no final newline
    known = KnownHosts(path)
    key = _key()
    known.record("192.0.2.7", 2222, key)
    known.record("192.0.2.7", 22, key)
    lines = path.read_text().splitlines()
    text = key.export_public_key().decode().strip()
    assert lines[-2:] == [f"[192.0.2.7]:2222 {text}", f"192.0.2.7 {text}"]
    for name in ("[192.0.2.7]:2222", "192.0.2.7"):
        found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, text=True)
        assert found.returncode == 0 and text in found.stdout
    assert known.load().match("192.0.2.7", "", 2222)[0] == [key]  # the unreadable lines are skipped


def test_the_decision_for_new_known_and_changed_keys(tmp_path):
    path = tmp_path / "known_hosts"
    key, other = _key(), _key()
    strict = KnownHosts(path, "strict").check()
    assert not strict.decide("h.example", "192.0.2.9", 22, key)
    assert strict.refusal is not None and "not in" in strict.refusal and not path.exists()

    first = KnownHosts(path).check()
    assert first.decide("h.example", "192.0.2.9", 22, key) and path.exists()
    assert KnownHosts(path, "strict").load().match("h.example", "", None)[0] == [key]

    for policy in ("accept-new", "strict"):
        changed = KnownHosts(path, policy).check()
        assert not changed.decide("h.example", "192.0.2.9", 22, other)
        assert changed.refusal is not None and f"ssh-keygen -R 'h.example' -f {path}" in changed.refusal
    assert len(path.read_text().splitlines()) == 1
    assert os.stat(path).st_mode & 0o777 == 0o600
