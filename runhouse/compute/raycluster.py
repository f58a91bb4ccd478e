"""A multi-node cluster: runhouse on every SSH host, Ray across them, our daemon on the first.

:class:`RayClusterDaemon` is the kind of ``rh.cluster(name, host=[h1, h2, h3], ssh_creds=...)``
(more than one host). ``up()``:

1. bootstraps runhouse on **all** hosts at once, with the same steps as a one-host SSH cluster
   (:mod:`runhouse.compute.bootstrap`: find Python, venv, upload the client's wheel, install);
   every progress line is prefixed with its host, and a host that fails names itself and its step;
2. installs Ray on all hosts and brings it up with :class:`~runhouse.compute.raynodes.RayNodes`
   (the first host is the head, the others join; a Ray cluster already answering at the head's
   address is joined instead of starting a second one);
3. starts our daemon on the head only, exactly as :class:`~runhouse.compute.remote.RemoteDaemon`
   does for one host. Every call enters through the head daemon.

``stop()`` stops our daemon, then the Ray processes we started on every host (never a Ray cluster
we joined). Reaching the daemon, shells and files are the head's :class:`RemoteDaemon`'s.

Not supported yet on multi-node (refused with a :class:`~runhouse.exceptions.ConfigError`):
connection types other than ``ssh``, ``autostop_mins`` (an idle daemon stopping itself would leave
Ray running on every host) and a host list naming this machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from runhouse.client.transport import Endpoint
from runhouse.compute import bootstrap
from runhouse.compute.daemon import DaemonHost, DaemonSpec, DenIdentity, ThroughDaemon
from runhouse.compute.raynodes import RayHost, RayNode, RayNodes, RayOptions, on_every_host
from runhouse.compute.remote import RemoteDaemon
from runhouse.compute.ssh import SSHSession, pool_for
from runhouse.exceptions import ConfigError, SSHError

T = TypeVar("T")
log = logging.getLogger("runhouse")
RECHECK_S = 10.0  # how long a pooled SSH connection may take to run `true` before it is reopened
SYNC_PROBE_S = 2.0  # how long a host may take to answer on its SSH port before a code sync skips it
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

#: how Ray runs on the hosts of every multi-node cluster made in this process (Ray's defaults:
#: GCS port 6379, CPUs, GPUs and memory detected)
RAY_OPTIONS = RayOptions()


def _say(prefix: str) -> Callable[[str], None]:
    def progress(message: str) -> None:
        # one write per line: print() writes the text and its newline apart, and the lines of hosts
        # working in parallel threads could then run into each other
        sys.stderr.write(f"[{prefix}] {message}\n")
        sys.stderr.flush()

    return progress


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_spec(spec: DaemonSpec) -> None:
    """Refuse what multi-node clusters do not support yet, naming it."""
    hosts = ", ".join(spec.hosts)
    if spec.ssh_creds is None:
        raise ConfigError(
            f"a multi-node cluster ({hosts}) is reached over SSH: give ssh_creds={{'ssh_user': ..., "
            "'ssh_private_key': ...}} (or 'password')"
        )
    local = [h for h in spec.hosts if h in LOCAL_HOSTS]
    if local:
        raise ConfigError(
            f"multi-node clusters run on SSH hosts; {', '.join(local)} names this machine: give the "
            "addresses the hosts reach each other at"
        )
    if len(set(spec.hosts)) != len(spec.hosts):
        raise ConfigError(f"host= names a host twice ({hosts})")
    if spec.connection_type != "ssh":
        raise ConfigError(
            f"server_connection_type={spec.connection_type!r} is not supported yet on multi-node clusters "
            "(only 'ssh', the default)"
        )
    if spec.autostop_mins is not None:
        raise ConfigError(
            "autostop_mins is not supported yet on multi-node clusters: the idle daemon would stop and "
            "leave Ray running on every host"
        )


class RayClusterDaemon(DaemonHost):
    """Our daemon on the first host, Ray across all hosts (see the module docstring)."""

    needs_code_sync = True

    def __init__(self, spec: DaemonSpec, ray_options: RayOptions | None = None) -> None:
        check_spec(spec)
        assert spec.ssh_creds is not None
        self.spec = spec
        self.head = RemoteDaemon.from_spec(spec)  # reaching the daemon, shells and files
        self.ray = RayNodes(
            [RayHost(h, spec.ssh_creds, python=spec.python, name=h) for h in spec.hosts],
            pool_for(spec.settings.home),
            ray_options or RAY_OPTIONS,
            progress=_print,
            host_key_policy=self.head.known_hosts.policy,
        )

    # -- lifecycle ----------------------------------------------------------------------------------
    def up(self, env_vars: dict[str, str], den_identity: DenIdentity | None = None) -> None:
        self._each(list(self.spec.hosts), self._reopen_if_lost, "connect")
        venvs = self._each(list(self.spec.hosts), self._bootstrap, "bootstrap")
        report = self.ray.up()
        progress = bootstrap.timed(_say(self.spec.head))
        progress(f"Ray is up across {len(self.spec.hosts)} hosts (GCS {report.gcs_address})")
        options = bootstrap.DaemonOptions(
            port=self.spec.port,
            bind=self.head.bind_host,
            tls=False,
            autostop_mins=None,
            env_vars=tuple(sorted({**env_vars, "RH_RAY_ADDRESS": report.gcs_address}.items())),
            den_identity=den_identity.text() if den_identity is not None else None,
        )
        bootstrap.start_daemon(self.head.session, venvs[0], options, progress)
        progress("daemon is up")

    def _session(self, host: str) -> SSHSession:
        assert self.spec.ssh_creds is not None
        return pool_for(self.spec.settings.home).session(
            host, self.spec.ssh_creds, host_key_policy=self.head.known_hosts.policy
        )

    def _reopen_if_lost(self, host: str) -> None:
        """A pooled SSH connection to ``host`` that died while the host was down or cut off (its
        transport not yet noticing) is closed, so the pool opens a new one for this ``up()``."""
        session = self._session(host)
        try:
            session.run("true", timeout=RECHECK_S, step="check connection")
            return
        except SSHError:
            session.close()
        deadline = time.monotonic() + RECHECK_S
        while self._session(host) is session and time.monotonic() < deadline:
            time.sleep(0.05)  # the close lands on the pool's loop; then session() reconnects

    def _bootstrap(self, host: str) -> str:
        """runhouse into ``host``'s venv, as a one-host cluster's bootstrap does; returns the venv."""
        progress = bootstrap.timed(_say(host))
        assert self.spec.ssh_creds is not None
        progress(f"connecting to {self.spec.ssh_creds.ssh_user}@{host}:{self.spec.ssh_creds.ssh_port}")
        session = pool_for(self.spec.settings.home).session(
            host, self.spec.ssh_creds, host_key_policy=self.head.known_hosts.policy
        )
        python = bootstrap.find_python(session, self.spec.python)
        progress(f"using {python}")
        return bootstrap.install(session, python, self.spec.settings.home / "wheels", progress)

    def stop(self) -> None:
        """Our daemon on the head, then the Ray processes we started on every host."""
        with contextlib.suppress(SSHError):  # a host still down is reported by the steps below
            self._each(list(self.spec.hosts), self._reopen_if_lost, "connect")
        try:
            self.head.stop()
        finally:
            self.ray.stop()

    def is_up(self) -> bool:
        return self.head.is_up()

    def nodes(self) -> list[dict[str, Any]]:
        """Every node Ray knows: address, cpus, memory (bytes), gpus, alive, is_head, resources."""
        return [_node(n) for n in self.ray.nodes()]

    # -- reaching the daemon: the head's --------------------------------------------------------------
    def endpoint(self) -> Endpoint:
        return self.head.endpoint()

    def token(self) -> str | None:
        return self.head.token()

    @property
    def server_address(self) -> str:
        return self.head.server_address

    @property
    def bind_host(self) -> str:
        return self.head.bind_host

    @property
    def tunnelled(self) -> bool:
        return self.head.tunnelled

    def interactive_shell(self, command: str | None = None) -> int:
        return self.head.interactive_shell(command)

    def rsync(self, source: str, dest: str, up: bool, contents: bool = False) -> None:
        self.head.rsync(source, dest, up=up, contents=contents)

    def sync_code(self, folder: Path, name: str, through_daemon: ThroughDaemon) -> str:
        """The folder to the head's ``~/.rh/code/<name>``, then to the same path on every other
        host at once, so a worker placed on any node imports the same code from the same path
        (hosts of one cluster are expected to share their home's path, as cloud images do).

        A host whose SSH server does not greet within :data:`SYNC_PROBE_S` is skipped with a
        warning, so a dead node never holds up deploys to the others; ``up()`` brings it back and
        the next deploy syncs it."""
        path = self.head.sync_code(folder, name, through_daemon)
        others = list(self.spec.hosts[1:])
        if not others:
            return path
        assert self.spec.ssh_creds is not None
        port = self.spec.ssh_creds.ssh_port

        def copy(host: str) -> str | None:
            if not _answers_ssh(host, port):
                return f"{host}:{port} did not greet as an SSH server within {SYNC_PROBE_S:g} s"
            RemoteDaemon.from_spec(replace(self.spec, hosts=(host,))).rsync(
                str(folder), path, up=True, contents=True, filter_gitignore=True
            )
            return None

        with concurrent.futures.ThreadPoolExecutor(len(others), thread_name_prefix="rh-sync") as pool:
            for host, skipped in zip(others, pool.map(copy, others), strict=True):
                if skipped:
                    log.warning(
                        "code not synced to %s: %s; workers there see the last synced copy", host, skipped
                    )
        return path

    # -- every host at once ---------------------------------------------------------------------------
    def _each(self, hosts: list[str], work: Callable[[str], T], step: str) -> list[T]:
        """``work`` on every host at once; every failure is reported, each naming its host."""
        return on_every_host(hosts, work, step)


def _answers_ssh(host: str, port: int) -> bool:
    """Whether an SSH server greets us at ``host:port`` within :data:`SYNC_PROBE_S` (a connection
    alone proves little: a proxy on the way may accept connections for hosts that are gone)."""
    try:
        with socket.create_connection((host, port), timeout=SYNC_PROBE_S) as sock:
            sock.settimeout(SYNC_PROBE_S)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def _node(node: RayNode) -> dict[str, Any]:
    return {
        "address": node.address,
        "cpus": node.cpus,
        "memory": node.memory,
        "gpus": node.gpus,
        "alive": node.alive,
        "is_head": node.is_head,
        "node_id": node.node_id,
        "resources": node.resources,
    }
