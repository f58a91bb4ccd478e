"""The one interface between a ``Cluster`` and wherever its daemon runs.

A :class:`DaemonHost` is a *kind* of cluster: it knows how to start and stop the daemon, how to
reach it (an :class:`~runhouse.client.transport.Endpoint` and a token), how to get a shell and
files onto its host, and whether code must be copied there. ``Cluster`` holds exactly one and
never asks which kind it is; each kind answers for itself. Two kinds exist today:

* :class:`LocalDaemon` (below): the daemon on this machine, by the functions of
  :mod:`runhouse.compute.local`.
* :class:`runhouse.compute.remote.RemoteDaemon`: the daemon on one host reached over SSH.

A new kind (multi-node on Ray, on-demand through SkyPilot, Kubernetes) is a new subclass; a
``Cluster`` subclass (or ``Cluster._make_daemon``, the one place that picks a kind) hands it out::

    class MyKind(DaemonHost):
        needs_code_sync = True
        def up(self, env_vars, den_identity=None): ...
        ...

    class MyCluster(rh.Cluster):
        def _make_daemon(self) -> DaemonHost:
            return MyKind(self._daemon_spec())
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from runhouse.client.transport import Endpoint
from runhouse.compute import local
from runhouse.exceptions import ConfigError
from runhouse.settings import Settings

if TYPE_CHECKING:  # annotations only: a local cluster never loads the SSH stack
    from runhouse.compute.ssh import SSHCreds


@dataclass(frozen=True)
class DaemonSpec:
    """What any kind needs to know about the cluster it serves."""

    name: str
    hosts: tuple[str, ...]
    port: int
    connection_type: str  # "none", "ssh" or "tls"
    settings: Settings
    ssh_creds: SSHCreds | None = None
    python: str | None = None
    autostop_mins: float | None = None

    @property
    def head(self) -> str:
        return self.hosts[0]


@dataclass(frozen=True)
class DenIdentity:
    """A daemon's identity in Den: Den's URL, the cluster's Den name and the daemon token Den
    issued for it. A kind puts it where its daemon reads it (``den.json``, mode 0600)."""

    den_url: str
    cluster: str
    token: str

    def text(self) -> str:
        return json.dumps({"den_url": self.den_url, "cluster": self.cluster, "token": self.token})


# Copies a folder to the cluster through the daemon's own file routes; returns its path there.
ThroughDaemon = Callable[[Path], str]


class DaemonHost(ABC):
    """Where a cluster's daemon runs, and how to bring it up, reach it and put files there."""

    #: whether local code must be copied to the cluster (its host does not share our files)
    needs_code_sync: ClassVar[bool]

    # -- lifecycle ----------------------------------------------------------------------------------
    @abstractmethod
    def up(self, env_vars: dict[str, str], den_identity: DenIdentity | None = None) -> None:
        """Start the daemon if it is not running, with ``env_vars`` in its environment (every
        worker inherits them); with ``den_identity`` it checks callers against Den."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the daemon and its workers (the host stays) and close what reached it."""

    @abstractmethod
    def is_up(self) -> bool:
        """Whether the daemon answers its health check; never raises for a daemon that is down."""

    # -- reaching the daemon --------------------------------------------------------------------------
    @abstractmethod
    def endpoint(self) -> Endpoint:
        """Where this client sends requests (opening a tunnel first if the kind needs one)."""

    @abstractmethod
    def token(self) -> str | None:
        """The cluster token the daemon accepts, or None where this client cannot read it."""

    @property
    @abstractmethod
    def server_address(self) -> str:
        """The host this client sends requests to, as the original's ``cluster.server_address``."""

    @property
    @abstractmethod
    def bind_host(self) -> str:
        """The address the daemon binds on its host."""

    @property
    def tunnelled(self) -> bool:
        """Whether only a tunnel reaches the daemon (so it has no URL others can use)."""
        return False

    def same_daemon(self, settings: Settings) -> bool | None:
        """Whether the daemon that ``settings`` name (the one this process descends from) is this
        cluster's; None when only the cluster's recorded name can tell."""
        return None

    # -- shells and files ---------------------------------------------------------------------------
    @abstractmethod
    def interactive_shell(self, command: str | None = None) -> int:
        """Open a shell on the head host, or run ``command`` there; return its exit code."""

    @abstractmethod
    def rsync(self, source: str, dest: str, up: bool, contents: bool = False) -> None:
        """Copy files to (``up=True``) or from the head host."""

    @abstractmethod
    def sync_code(self, folder: Path, name: str, through_daemon: ThroughDaemon) -> str:
        """Copy a local folder to the cluster under ``name``; return its path there.
        ``through_daemon`` copies it with the daemon's own file routes, for kinds that use them."""


class LocalDaemon(DaemonHost):
    """The kind of cluster whose daemon runs on this machine, on 127.0.0.1 (plain HTTP: nothing
    leaves the machine). Code needs no copying; folders go through the daemon's file routes."""

    needs_code_sync = False

    def __init__(self, spec: DaemonSpec) -> None:
        self.spec = spec

    @property
    def settings(self) -> Settings:
        return self.spec.settings

    @property
    def port(self) -> int:
        return self.spec.port

    def up(self, env_vars: dict[str, str], den_identity: DenIdentity | None = None) -> None:
        if den_identity is not None:
            local.write_den_identity(
                self.settings, self.port, den_identity.den_url, den_identity.cluster, den_identity.token
            )
        local.start_daemon(
            self.settings,
            "127.0.0.1",
            self.port,
            extra_env=env_vars,
            autostop_mins=self.spec.autostop_mins,
            den_auth=den_identity is not None,
        )

    def stop(self) -> None:
        local.stop_daemon(self.settings, self.port)

    def is_up(self) -> bool:
        return local.ping("127.0.0.1", self.port) is not None

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    def token(self) -> str | None:
        return local.read_token(self.settings, self.port)

    @property
    def server_address(self) -> str:
        return "localhost"

    @property
    def bind_host(self) -> str:
        return "127.0.0.1"

    def same_daemon(self, settings: Settings) -> bool | None:
        return self.port == settings.port and self.settings.home == settings.home

    def interactive_shell(self, command: str | None = None) -> int:
        raise ConfigError("cluster.ssh() is for remote clusters; this one runs on this machine")

    def rsync(self, source: str, dest: str, up: bool, contents: bool = False) -> None:
        raise ConfigError("cluster.rsync() is for remote clusters; this one runs on this machine")

    def sync_code(self, folder: Path, name: str, through_daemon: ThroughDaemon) -> str:
        return through_daemon(folder)
