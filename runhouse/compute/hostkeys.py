"""SSH host keys: one OpenSSH-format ``known_hosts`` file, checked during the key exchange.

Every connection to a cluster host trusts the same file, ``$RH_HOME/known_hosts``: asyncssh's
(commands, uploads, the tunnel to the daemon) and OpenSSH's (``cluster.ssh()``, rsync). Lines are
in OpenSSH's format (``host key-type base64``; ``[host]:port`` for a port other than 22), so each
tool reads what the other recorded and ``ssh-keygen -R host -f <file>`` removes a host. Earlier
versions wrote the same lines to this file, so it is read as is; their second file for OpenSSH
tools, ``known_hosts_openssh``, is no longer read.

The server's key is checked when the server proves it holds it, in the key exchange, so nothing of
the credentials (neither a password nor a key signature, not even the user name) is sent to a host
that fails the check:

* a recorded key matches: go on;
* the host has recorded keys and none matches: refused, whatever the policy (the host was rebuilt,
  or someone is in the middle);
* the host has no recorded key: policy ``accept-new`` (the default, as OpenSSH's
  ``StrictHostKeyChecking=accept-new``) records the key and goes on; ``strict`` refuses.

The policy is the setting ``ssh_host_key_policy`` (``RH_SSH_HOST_KEY_POLICY``).
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from runhouse.exceptions import ConfigError

ACCEPT_NEW = "accept-new"
STRICT = "strict"
POLICIES = (ACCEPT_NEW, STRICT)
_OPENSSH_STRICTNESS = {ACCEPT_NEW: "accept-new", STRICT: "yes"}
_APPEND_LOCK = threading.Lock()


def check_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`POLICIES`; a ConfigError that lists them otherwise."""
    if policy not in POLICIES:
        raise ConfigError(
            f"ssh_host_key_policy must be one of {', '.join(POLICIES)}, got {policy!r} "
            "(set by RH_SSH_HOST_KEY_POLICY or ssh_host_key_policy in $RH_HOME/config.yaml)"
        )
    return policy


def host_pattern(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, ``[host]:port`` elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


def _openssh_value(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


@dataclass(frozen=True)
class KnownHosts:
    """The known_hosts file and the policy for hosts it does not name yet."""

    path: Path
    policy: str = ACCEPT_NEW

    def __post_init__(self) -> None:
        check_policy(self.policy)

    def openssh_options(self) -> list[str]:
        """``ssh -o`` options that make OpenSSH tools check hosts against this file, by this policy.

        Only this file is trusted (no global one, as for asyncssh), and what ssh adds to it is
        written with plain host names, as the rest of the file. Makes the file's folder, which ssh
        does not."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return [
            "-o",
            f"UserKnownHostsFile={_openssh_value(str(self.path))}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            f"StrictHostKeyChecking={_OPENSSH_STRICTNESS[self.policy]}",
            "-o",
            "HashKnownHosts=no",
        ]

    def load(self) -> asyncssh.SSHKnownHosts:
        """The file's entries; a line that cannot be read is skipped, as OpenSSH does."""
        entries = asyncssh.import_known_hosts("")
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return entries
        for line in text.splitlines():
            try:
                entries.load(line)
            except ValueError:
                continue
        return entries

    def record(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        """Append ``host``'s key (a file made mode 0600 in a 0700 folder when it is new)."""
        data = base64.b64encode(key.public_data).decode()
        line = f"{host_pattern(host, port)} {key.algorithm.decode()} {data}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _APPEND_LOCK:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b") as f:
                size = f.seek(0, os.SEEK_END)
                if size:  # someone (an editor, ssh-keyscan >>) may have left no final newline
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = "\n" + line
                f.write(line.encode())

    def check(self) -> HostKeyCheck:
        """The check for one new connection (reads the file now)."""
        return HostKeyCheck(self)


class HostKeyCheck:
    """asyncssh options that check one connection's host key in the key exchange, and the reason
    when the key was refused (:attr:`refusal`)."""

    def __init__(self, known: KnownHosts) -> None:
        self.known = known
        self.refusal: str | None = None
        self._entries = known.load()

    def connect_options(self) -> dict[str, Any]:
        """For ``asyncssh.connect``: recorded keys are trusted outright (and their key types asked
        for first); any other key goes to :meth:`decide` before authentication starts."""
        return {"known_hosts": self._entries, "client_factory": self._client}

    def _client(self) -> asyncssh.SSHClient:
        return _CheckingClient(self)

    def decide(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Whether to go on with a key the file does not trust (see the module docstring)."""
        pattern, path = host_pattern(host, port), self.known.path
        recorded = self._entries.match(host, addr, None if port == 22 else port)[0]
        fingerprint = key.get_fingerprint()
        if recorded:
            self.refusal = (
                f"the host key of {pattern} ({fingerprint}) does not match the one recorded in {path}; "
                "refused before logging in. If the host was rebuilt or its key changed, remove the old "
                f"key with `ssh-keygen -R '{pattern}' -f {path}` and connect again; if not, someone may "
                "be intercepting the connection"
            )
            return False
        if self.known.policy == STRICT:
            port_option = "" if port == 22 else f"-p {port} "
            self.refusal = (
                f"{pattern} is not in {path} and ssh_host_key_policy is 'strict'; refused before "
                f"logging in. Check that its key is {fingerprint} and add it "
                f"(`ssh-keyscan {port_option}{host} >> {path}`), or connect once with "
                "RH_SSH_HOST_KEY_POLICY=accept-new"
            )
            return False
        self.known.record(host, port, key)
        return True


class _CheckingClient(asyncssh.SSHClient):
    """asyncssh asks its client about a host key the known_hosts entries do not trust."""

    def __init__(self, check: HostKeyCheck) -> None:
        self._check = check

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._check.decide(host, addr, port, key)
