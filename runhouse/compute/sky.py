"""On-demand machines through SkyPilot (the ``sky`` extra): launch, look up, autostop, terminate.

SkyPilot does the cloud part of an on-demand cluster: our arguments become a ``sky.Resources`` and a
``sky.Task`` (SkyPilot validates them against its catalog), its optimizer picks the instance, its
backend provisions the machines and records them in SkyPilot's own state (``~/.sky``), so ``sky
status`` and ``sky down`` see our clusters too. What we take from it is the head's SSH details; our
own bootstrap (:class:`~runhouse.compute.remote.RemoteDaemon`, or
:class:`~runhouse.compute.raycluster.RayClusterDaemon` for several nodes) does the rest.

**Version.** SkyPilot 0.9.x (``skypilot>=0.9.3,<0.10``). From 0.10 on it requires
``uvicorn<0.36``, which our daemon's pinned ``uvicorn 0.54`` rules out. Since 0.8 the top-level
``sky.launch`` is the client of SkyPilot's API server; the server runs ``sky.execution.launch``,
``sky.core.status`` and the backend's ``teardown`` in its own process. We call those in-process
instead (no API server to start or keep alive): they are SkyPilot internals, hence the pin.

**The seam to the cloud** is the backend (:data:`BACKEND`, SkyPilot's ``CloudVmRayBackend``). Its
``provision`` (cluster template, cloud API calls, SkyPilot's runtime installed on the machines),
``set_autostop`` (skylet on the head) and ``teardown`` are the only places SkyPilot reaches a
cloud or the new machines; tests replace that one object with a backend whose ``_provision`` hands
back a network-namespace SSH host, and everything before it (validation, optimizer, catalog,
SkyPilot's cluster records) and after it (our bootstrap, calls, teardown) runs for real.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runhouse.client.transport import Endpoint
from runhouse.compute.daemon import DaemonHost, DenIdentity, ThroughDaemon
from runhouse.exceptions import ConfigError
from runhouse.settings import kubeconfig_locations

try:
    import sky
    from sky import core as sky_core
    from sky import exceptions as sky_exceptions
    from sky import execution as sky_execution
    from sky import global_user_state
    from sky.backends import backend_utils, cloud_vm_ray_backend
    from sky.utils import annotations as sky_annotations
    from sky.utils import common as sky_common
    from sky.utils import registry as sky_registry
except ImportError as e:  # the extra is optional: say how to get it
    raise ConfigError(
        'on-demand clusters (instance_type=/provider=) need SkyPilot: pip install "runhouse[sky]"'
    ) from e

# This process is SkyPilot's client and its server at once: progress is for this terminal, not
# encoded for a client reading a server's output (which SkyPilot does when this flag is set).
sky_annotations.is_on_api_server = False

#: makes the SkyPilot backend every launch, status and teardown goes through (the seam to the cloud)
BACKEND: Callable[[], Any] = cloud_vm_ray_backend.CloudVmRayBackend

#: how often our keeper on the head refreshes SkyPilot's idle clock while our daemon is busy
#: (:mod:`runhouse.compute.skyidle`; SkyPilot's skylet looks once a minute)
KEEP_AWAKE_EVERY_S = 30.0

#: ``provider=`` values that let SkyPilot's optimizer choose among the clouds ``sky check`` enabled
ANY_PROVIDER = ("cheapest", "any")


@dataclass(frozen=True)
class SkyRequest:
    """What an on-demand cluster asks SkyPilot for (the original ``OnDemandCluster``'s arguments)."""

    provider: str | None = None
    instance_type: str | None = None
    num_nodes: int = 1
    use_spot: bool = False
    region: str | None = None
    zone: str | None = None
    disk_size: int | None = None
    image_id: str | None = None
    open_ports: tuple[int | str, ...] = ()
    memory: str | None = None
    cpus: str | None = None
    gpus: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ConfigError(f"num_nodes must be 1 or more, not {self.num_nodes}")
        if self.disk_size is not None and (not isinstance(self.disk_size, int) or self.disk_size <= 0):
            raise ConfigError(
                f"disk_size is in GB and must be a positive whole number, not {self.disk_size!r}"
            )
        if self.zone is not None and self.region is None and self.provider == "kubernetes":
            raise ConfigError("Kubernetes has no zones; give context= (SkyPilot's region) instead")


def cloud_of(provider: str | None) -> Any:
    """SkyPilot's cloud object for ``provider`` (None: the optimizer picks among enabled clouds)."""
    if provider is None or provider.lower() in ANY_PROVIDER:
        return None
    try:
        return sky_registry.CLOUD_REGISTRY.from_str(provider)
    except ValueError as e:
        raise ConfigError(f"provider={provider!r}: {e}") from None


def split_instance_type(instance_type: str | None) -> dict[str, str]:
    """The original's ``instance_type`` forms as SkyPilot arguments: ``"A10G:1"`` (accelerators),
    ``"CPU:4"`` / ``"CPU:4+"`` (vCPUs), or a cloud's own type (``"g5.xlarge"``)."""
    if not instance_type:
        return {}
    cpu = re.fullmatch(r"(?i)cpu:(\d+\+?)", instance_type)
    if cpu:
        return {"cpus": cpu.group(1)}
    if ":" in instance_type:
        return {"accelerators": instance_type}
    return {"instance_type": instance_type}


def resources(request: SkyRequest) -> Any:
    """``sky.Resources`` for ``request``, validated by SkyPilot (an unknown instance type for the
    provider, a region it does not have, ... become a ``ConfigError`` with SkyPilot's words)."""
    arguments: dict[str, Any] = {
        "cloud": cloud_of(request.provider),
        "use_spot": request.use_spot,
        "region": request.region,
        "zone": request.zone,
        "disk_size": request.disk_size,
        "image_id": request.image_id,
        "ports": [str(p) for p in request.open_ports] or None,
        "memory": request.memory,
        "cpus": request.cpus,
        "labels": request.labels or None,
        **split_instance_type(request.instance_type),
    }
    if request.gpus:
        if "accelerators" in arguments:
            raise ConfigError("give the GPUs once: instance_type='A10G:1' or gpus='A10G:1', not both")
        arguments["accelerators"] = request.gpus
    with _traceback_kept():
        try:
            made = sky.Resources(**{k: v for k, v in arguments.items() if v is not None})
            # SkyPilot checks an instance type against its catalog when it first derives its
            # accelerators; do it now so a type the provider lacks is refused here
            made.accelerators  # noqa: B018
        except (ValueError, sky_exceptions.ResourcesUnavailableError, sky_exceptions.NotSupportedError) as e:
            raise ConfigError(f"SkyPilot refused these resources: {e}") from None
    return made


@contextmanager
def _traceback_kept() -> Iterator[None]:
    """One SkyPilot request: start with SkyPilot's request-scoped caches cleared, as its API
    server does per request (the current kubeconfig context, a context's namespace and nodes are
    cached there, and each of our launches may run with a different ``KUBECONFIG``, which the
    Kubernetes client is told again); and since
    SkyPilot sets ``sys.tracebacklimit = 0`` around errors it raises and does not put it back when
    they escape, keep the user's tracebacks whole."""
    for cached in sky_annotations.FUNCTIONS_NEED_RELOAD_CACHE:
        cached.cache_clear()
    # the Kubernetes client reads KUBECONFIG once, when imported; ours changes between requests
    # (a provider secret's temporary file, a copy naming the context and namespace)
    kube_config = sys.modules.get("kubernetes.config.kube_config")
    if kube_config is not None:
        setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig_locations())  # noqa: B010
    before = getattr(sys, "tracebacklimit", None)
    try:
        yield
    finally:
        if before is None:
            sys.__dict__.pop("tracebacklimit", None)
        else:
            sys.tracebacklimit = before


def task(name: str, request: SkyRequest) -> Any:
    """The ``sky.Task`` an on-demand cluster is launched with: no setup or run of SkyPilot's own
    (our daemon is what runs there), ``num_nodes`` machines of ``request``'s resources."""
    return sky.Task(name=name, num_nodes=request.num_nodes).set_resources(resources(request))


@dataclass(frozen=True)
class Head:
    """Where SkyPilot says a cluster's machines are and how to log in to them."""

    ips: tuple[str, ...]  # the addresses this client reaches, head first
    internal_ips: tuple[str, ...]  # the addresses the nodes reach each other at
    ssh_ports: tuple[int, ...]
    ssh_user: str
    ssh_private_key: str | None
    ssh_proxy_command: str | None = None

    def creds(self) -> dict[str, Any]:
        """Our ``ssh_creds`` for the head."""
        creds: dict[str, Any] = {"ssh_user": self.ssh_user, "ssh_port": self.ssh_ports[0]}
        if self.ssh_private_key:
            creds["ssh_private_key"] = self.ssh_private_key
        if self.ssh_proxy_command:
            creds["ssh_proxy_command"] = self.ssh_proxy_command
        return creds


def head_of(handle: Any) -> Head:
    """The SSH details in a SkyPilot cluster handle (addresses, ports, and the user and key from the
    cluster template SkyPilot provisioned with)."""
    ips = tuple(handle.external_ips() or ())
    if not ips:
        raise ConfigError(f"SkyPilot reports no address for cluster {handle.cluster_name!r}; is it up?")
    internal = tuple(i for i, _ in handle.stable_internal_external_ips or ()) or ips
    ports = tuple(int(p) for p in (handle.external_ssh_ports() or [22] * len(ips)))
    creds = backend_utils.ssh_credential_from_yaml(handle.cluster_yaml, handle.docker_user, handle.ssh_user)
    if not creds.get("ssh_user"):
        raise ConfigError(f"SkyPilot's record of {handle.cluster_name!r} has no SSH user")
    return Head(
        ips=ips,
        internal_ips=internal,
        ssh_ports=ports,
        ssh_user=str(creds["ssh_user"]),
        ssh_private_key=creds.get("ssh_private_key"),
        ssh_proxy_command=creds.get("ssh_proxy_command"),
    )


def autostop_minutes(autostop_mins: float | None) -> int | None:
    """SkyPilot counts whole minutes (and treats 0 as 1); None and negatives mean never."""
    if autostop_mins is None or autostop_mins < 0:
        return None
    return max(1, math.ceil(autostop_mins))


class SkyLauncher:
    """SkyPilot's launch, records, autostop and teardown for named clusters, in this process."""

    def __init__(self, backend: Any = None) -> None:
        self.backend = backend if backend is not None else BACKEND()

    def launch(self, name: str, request: SkyRequest, autostop_mins: float | None = None) -> Head:
        """Launch (or reuse, if SkyPilot has it up) cluster ``name``; SkyPilot prints its progress.
        With ``autostop_mins``, SkyPilot stops the machines after that long idle, whatever our
        daemon does; on Kubernetes, where a pod cannot be stopped, it deletes them (autodown)."""
        minutes = autostop_minutes(autostop_mins)
        with _traceback_kept():
            try:
                _, handle = sky_execution.launch(
                    task(name, request),
                    cluster_name=name,
                    idle_minutes_to_autostop=minutes,
                    down=minutes is not None and request.provider == "kubernetes",
                    backend=self.backend,
                    stream_logs=True,
                )
            except (sky_exceptions.ResourcesUnavailableError, sky_exceptions.ResourcesMismatchError) as e:
                raise ConfigError(f"SkyPilot could not launch {name!r}: {e}") from None
        if handle is None:
            raise ConfigError(f"SkyPilot launched nothing for {name!r}")
        return head_of(handle)

    def record(self, name: str) -> dict[str, Any] | None:
        """SkyPilot's record of ``name`` (``status``, ``autostop``, ``launched_at``, ...), or None."""
        with _traceback_kept():
            records = sky_core.status(cluster_names=[name], refresh=sky_common.StatusRefreshMode.NONE)
        return records[0] if records else None

    def state(self, name: str) -> str | None:
        """``UP``, ``INIT``, ``STOPPED`` (SkyPilot's words), or None when SkyPilot has no such cluster."""
        record = self.record(name)
        return None if record is None else str(record["status"].value)

    def head(self, name: str) -> Head | None:
        """The SSH details of a cluster SkyPilot has up, else None."""
        record = self.record(name)
        if record is None or record["status"] != sky.ClusterStatus.UP:
            return None
        return head_of(record["handle"])

    def terminate(self, name: str) -> bool:
        """Terminate ``name``'s machines through SkyPilot; False when SkyPilot has no such cluster."""
        handle = global_user_state.get_handle_from_cluster_name(name)
        if handle is None:
            return False
        with _traceback_kept():
            self.backend.teardown(handle, terminate=True)
        return True

    def names(self) -> list[dict[str, Any]]:
        """Every cluster SkyPilot has a record of, as ``{name, status, resources, autostop, launched_at}``."""
        return [summary(r) for r in sky_core.status(refresh=sky_common.StatusRefreshMode.NONE)]


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a SkyPilot record worth showing (JSON-able)."""
    handle = record.get("handle")
    resources = getattr(handle, "launched_resources", None)
    return {
        "name": record["name"],
        "status": str(record["status"].value),
        "nodes": getattr(handle, "launched_nodes", None),
        "resources": str(resources) if resources is not None else None,
        "autostop_mins": record.get("autostop") if (record.get("autostop") or -1) >= 0 else None,
        "launched_at": record.get("launched_at"),
    }


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in this process's environment for the duration (SkyPilot and the clouds' SDKs
    read credentials locations from it), then put back what was there."""
    before = dict(os.environ)  # a snapshot to restore, not configuration (that is settings.py's)
    old = {k: before.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class NotLaunched(DaemonHost):
    """The kind of an on-demand cluster whose machines SkyPilot has not launched yet (or that were
    torn down): it is not up, and anything that would reach it says to call ``up()`` first."""

    needs_code_sync = True

    def __init__(self, name: str) -> None:
        self.name = name

    def _refuse(self) -> ConfigError:
        return ConfigError(f"on-demand cluster {self.name!r} has no machines yet: call .up() or .up_if_not()")

    def up(self, env_vars: dict[str, str], den_identity: DenIdentity | None = None) -> None:
        raise self._refuse()

    def stop(self) -> None:
        return None

    def is_up(self) -> bool:
        return False

    def endpoint(self) -> Endpoint:
        raise self._refuse()

    def token(self) -> str | None:
        raise self._refuse()

    @property
    def server_address(self) -> str:
        raise self._refuse()

    @property
    def bind_host(self) -> str:
        return "127.0.0.1"

    @property
    def tunnelled(self) -> bool:
        return True

    def interactive_shell(self, command: str | None = None) -> int:
        raise self._refuse()

    def rsync(self, source: str, dest: str, up: bool, contents: bool = False) -> None:
        raise self._refuse()

    def sync_code(self, folder: Path, name: str, through_daemon: ThroughDaemon) -> str:
        raise self._refuse()
