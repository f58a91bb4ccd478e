"""A cluster whose daemon runs on another host reached over SSH.

:class:`RemoteDaemon` knows how to bring the daemon up on the head host (see
:mod:`runhouse.compute.bootstrap`), and how to reach it afterwards for each connection type:

* ``ssh``  (default): the daemon listens on the host's 127.0.0.1; the client talks to it through
  a local port on 127.0.0.1 forwarded by an ``ssh -N -L`` process of ours (asyncssh's forward
  where OpenSSH cannot be used; :mod:`runhouse.compute.forward`), shared by every cluster object
  in the process and stopped when the cluster is torn down.
* ``tls``: the daemon listens on all addresses with HTTPS; the client pins the certificate it
  fetched over SSH, so it verifies the host it talks to.
* ``none``: plain HTTP to the host's address, for trusted networks.

The cluster token is read from the host over SSH and only ever travels over these channels.
It is the SSH kind of :class:`~runhouse.compute.daemon.DaemonHost`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runhouse.client.daemon_client import DaemonClient
from runhouse.client.transport import Endpoint
from runhouse.compute import bootstrap
from runhouse.compute.daemon import DaemonHost, DaemonSpec, DenIdentity, ThroughDaemon
from runhouse.compute.hostkeys import KnownHosts
from runhouse.compute.ssh import SSHCreds, SSHSession, openssh_argv, pool_for
from runhouse.exceptions import ConfigError, ConnectionError_, ServerError, SSHError
from runhouse.settings import Settings


def _say(name: str) -> bootstrap.Progress:
    def progress(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return progress


@dataclass
class RemoteDaemon(DaemonHost):
    name: str
    host: str
    creds: SSHCreds
    port: int
    connection_type: str
    settings: Settings
    python: str | None = None
    autostop_mins: float | None = None
    known_hosts: KnownHosts = field(init=False, repr=False)
    needs_code_sync = True  # the host has its own files: code is copied there with rsync

    @classmethod
    def from_spec(cls, spec: DaemonSpec) -> RemoteDaemon:
        if spec.ssh_creds is None:
            raise ConfigError(
                f"host {spec.head!r} is not this machine: give ssh_creds={{'ssh_user': ..., "
                "'ssh_private_key': ...}} (or 'password')"
            )
        return cls(
            spec.name,
            spec.head,
            spec.ssh_creds,
            spec.port,
            spec.connection_type,
            spec.settings,
            spec.python,
            spec.autostop_mins,
        )

    def __post_init__(self) -> None:
        # a bad policy is reported when the cluster is made, not at its first connection
        self.known_hosts = KnownHosts(self.settings.home / "known_hosts", self.settings.ssh_host_key_policy)

    @property
    def session(self) -> SSHSession:
        return pool_for(self.settings.home).session(
            self.host, self.creds, host_key_policy=self.known_hosts.policy
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def up(self, env_vars: dict[str, str], den_identity: DenIdentity | None = None) -> None:
        progress = bootstrap.timed(_say(self.name))
        progress(f"connecting to {self.creds.ssh_user}@{self.host}:{self.creds.ssh_port}")
        session = self.session
        python = bootstrap.find_python(session, self.python)
        progress(f"using {python}")
        venv = bootstrap.install(session, python, self.settings.home / "wheels", progress)
        options = bootstrap.DaemonOptions(
            port=self.port,
            bind=self.bind_host,
            tls=self.connection_type == "tls",
            autostop_mins=self.autostop_mins,
            env_vars=tuple(sorted(env_vars.items())),
            den_identity=den_identity.text() if den_identity is not None else None,
        )
        bootstrap.start_daemon(session, venv, options, progress)
        progress("daemon is up")

    def stop(self) -> None:
        bootstrap.stop_daemon(self.session, self.port)
        self.session.cache.clear()  # a new daemon may make new secrets
        self.close()

    def is_up(self) -> bool:
        """Asked of the daemon itself (over the tunnel for ``ssh``). Its token is read first: a
        host without one runs no daemon of ours, whatever listens on the port."""
        try:
            client = DaemonClient(self.endpoint(), self.token())
            try:
                client.check()
            finally:
                client.close()
        except (ConnectionError_, ServerError):
            return False
        return True

    def close(self) -> None:
        """Close this daemon's tunnel (the SSH connection stays for other users in the process)."""
        if self.connection_type == "ssh":
            self.session.close_forward(self.port)

    # -- reaching the daemon ----------------------------------------------------------------------
    @property
    def server_address(self) -> str:
        return "localhost" if self.tunnelled else self.host

    @property
    def bind_host(self) -> str:
        return "127.0.0.1" if self.tunnelled else "0.0.0.0"

    @property
    def tunnelled(self) -> bool:
        return self.connection_type == "ssh"

    def token(self) -> str:
        return self._secret("token")

    def _secret(self, name: str) -> str:
        """A file of the daemon's private folder on the host, read once per SSH connection."""
        session = self.session
        key = (self.port, name)
        if key not in session.cache:
            session.cache[key] = bootstrap.daemon_secret(session, self.port, name)
        return session.cache[key]

    def endpoint(self) -> Endpoint:
        if self.connection_type == "ssh":
            port = self.session.forward(self.port)
            tunnel = self.session.tunnel(self.port)
            return Endpoint("127.0.0.1", port, gate=tunnel.gate if tunnel is not None else None)
        if self.connection_type == "tls":
            cert = self.settings.home / "certs" / f"{self.host}-{self.port}.crt"
            cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            cert.write_text(self._secret("tls.crt") + "\n")
            return Endpoint(self.host, self.port, scheme="https", verify=str(cert))
        return Endpoint(self.host, self.port)

    # -- files and shells -------------------------------------------------------------------------
    def ssh_command(self) -> list[str]:
        """An ``ssh`` command line logging into the host with these credentials."""
        argv = openssh_argv(self.host, self.creds, self.known_hosts)
        return self._with_password(argv)

    def _with_password(self, argv: list[str]) -> list[str]:
        if not self.creds.password:
            return argv
        if shutil.which("sshpass") is None:
            raise ConfigError("password logins from the command line need sshpass; install it or use a key")
        return ["sshpass", "-e", *argv]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.creds.password:
            env["SSHPASS"] = self.creds.password
        return env

    def interactive_shell(self, command: str | None = None) -> int:
        argv = self.ssh_command() + ([command] if command else [])
        return subprocess.call(argv, env=self._env())

    def rsync(
        self, source: str, dest: str, up: bool, contents: bool = False, filter_gitignore: bool = False
    ) -> None:
        if shutil.which("rsync") is None:
            raise ConfigError("cluster.rsync needs rsync on this machine (apt-get install rsync)")
        remote_shell = shlex.join(self.ssh_command()[self.ssh_command().index("ssh") : -1])
        target = f"{self.creds.ssh_user}@{self.host}:{dest if up else source}"
        src, dst = (source, target) if up else (target, dest)
        if contents and not src.endswith("/"):
            src += "/"
        argv = ["rsync", "-a", "--delete", "--mkpath", "-e", remote_shell]
        if filter_gitignore:
            argv += ["--filter=:- .gitignore", "--exclude=.git", "--exclude=__pycache__", "--exclude=*.pyc"]
        argv += [src, dst]
        argv = ["sshpass", "-e", *argv] if self.creds.password else argv
        done = subprocess.run(argv, capture_output=True, text=True, env=self._env())
        if done.returncode != 0:
            raise SSHError(
                f"rsync {'to' if up else 'from'} {self.session.where} failed: {done.stderr.strip()[-2000:]}"
            )

    def sync_code(self, folder: Path, name: str, through_daemon: ThroughDaemon | None = None) -> str:
        """Mirror a local folder to ``~/.rh/code/<name>`` on the host with rsync; return its path there."""
        remote = f"{self.session.home()}/.rh/code/{name}"
        self.rsync(str(folder), remote, up=True, contents=True, filter_gitignore=True)
        return remote
