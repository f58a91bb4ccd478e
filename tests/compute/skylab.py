"""SkyPilot without a cloud, for on-demand cluster tests and bench/ondemand.py.

SkyPilot runs for real: ``sky.Resources``/``sky.Task`` validation, the optimizer choosing from the
catalog files written here (a tiny AWS/GCP catalog, as ``~/.sky/catalogs`` would hold), the launch
stages, its cluster records in ``~/.sky`` (so ``sky status`` sees the clusters) and its teardown
path. Only SkyPilot's backend steps that reach a cloud or SkyPilot's runtime on a new machine are
replaced (:func:`netns_backend`): ``_provision`` hands back a network-namespace SSH host
(``tests/sshhosts.py``) with a cluster template naming its user and key, as SkyPilot's own would;
``set_autostop`` records the minutes in SkyPilot's state as the real one does after telling the
machine's skylet; ``teardown_no_lock`` removes the record instead of calling the cloud.

SkyPilot reads ``HOME`` when it is imported (catalog folder, state database), so :func:`sky_home`
must run before anything imports ``sky`` in the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATALOG = "v7"  # SkyPilot 0.9's catalog schema version (sky/clouds/service_catalog/constants.py)

AWS_VMS = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone
g5.xlarge,A10G,1.0,4.0,16.0,,1.006,0.4,us-east-1,use1-az1
g5.xlarge,A10G,1.0,4.0,16.0,,1.1,0.45,us-west-2,usw2-az1
g5.2xlarge,A10G,1.0,8.0,32.0,,1.212,0.5,us-east-1,use1-az1
m6i.large,,,2.0,8.0,,0.096,0.04,us-east-1,use1-az1
m6i.2xlarge,,,8.0,32.0,,0.384,0.15,us-east-1,use1-az1
"""
ACCELERATORS = """\
AcceleratorName,Clouds
A10G,"['AWS']"
A100,"['AWS', 'GCP']"
"""
# what the provider's credential variables pointed at while SkyPilot provisioned
CREDENTIAL_VARIABLES = ("AWS_SHARED_CREDENTIALS_FILE", "KUBECONFIG", "GOOGLE_APPLICATION_CREDENTIALS")


_home: list[Path] = []  # the first home made in this process: SkyPilot keeps the paths it read at import


def sky_home(home: Path) -> Path:
    """Make ``home`` SkyPilot's home (catalogs, no network needed), point ``HOME`` at it and
    record AWS and Kubernetes as enabled, as ``sky check`` would with credentials in place.
    SkyPilot reads ``HOME`` once per process, so a later call points ``HOME`` back at the first
    home (test modules run in one process share it) and returns the home in use."""
    if _home:
        os.environ["HOME"] = str(_home[0])
        return _home[0]
    _home.append(home)
    catalogs = home / ".sky" / "catalogs" / CATALOG
    (catalogs / "aws").mkdir(parents=True, exist_ok=True)
    (catalogs / "common").mkdir(parents=True, exist_ok=True)
    (catalogs / "aws" / "vms.csv").write_text(AWS_VMS)
    (catalogs / "common" / "accelerators.csv").write_text(ACCELERATORS)
    os.environ["HOME"] = str(home)
    os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"  # SkyPilot's telemetry (no network here)
    # who owns a cluster is asked of the cloud's identity API (AWS STS): part of the cloud we replace
    os.environ["SKYPILOT_SKIP_CLOUD_IDENTITY_CHECK"] = "1"
    from sky import global_user_state
    from sky.clouds.cloud import CloudCapability

    global_user_state.set_enabled_clouds(["AWS", "Kubernetes"], CloudCapability.COMPUTE)
    return home


@dataclass
class Provisioned:
    """One provisioning request the backend answered, as SkyPilot made it."""

    cluster: str
    resources: Any  # the sky.Resources SkyPilot's optimizer chose
    host: str
    credentials: dict[str, tuple[int, str]]  # variable -> (file mode, text) seen during the launch


@dataclass
class Cloud:
    """The test's cloud: the hosts it hands out and what it was asked."""

    hosts: list[Any]  # sshhosts.Host, handed out in order
    private_key: Path
    provisioned: list[Provisioned] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    autostop: dict[str, int] = field(default_factory=dict)

    def take(self) -> Any:
        used = {p.host for p in self.provisioned if p.cluster not in self.terminated}
        for host in self.hosts:
            if host.address not in used:
                return host
        raise RuntimeError("the test cloud has no free host")


def netns_backend(cloud: Cloud) -> Any:
    """A SkyPilot ``CloudVmRayBackend`` whose cloud is ``cloud`` (see the module docstring)."""
    from sky import global_user_state
    from sky.backends import cloud_vm_ray_backend as cvr

    class NetnsBackend(cvr.CloudVmRayBackend):
        def _provision(
            self,
            task: Any,
            to_provision: Any,
            dryrun: bool,
            stream_logs: bool,
            cluster_name: str,
            retry_until_up: bool = False,
            skip_unnecessary_provisioning: bool = False,
        ) -> tuple[Any, bool]:
            host = cloud.take()
            seen = {}
            for variable in CREDENTIAL_VARIABLES:
                path = os.environ.get(variable)
                if path and os.path.exists(path):
                    seen[variable] = (os.stat(path).st_mode & 0o777, Path(path).read_text())
            cloud.provisioned.append(Provisioned(cluster_name, to_provision, host.address, seen))
            # the cluster template SkyPilot writes at provisioning holds the SSH user and key
            generated = Path(os.path.expanduser("~/.sky/generated"))
            generated.mkdir(parents=True, exist_ok=True)
            template = generated / f"{cluster_name}.yml"
            template.write_text(
                f"cluster_name: {cluster_name}\nprovider:\n  module: sky.provision.aws\n"
                f"auth:\n  ssh_user: root\n  ssh_private_key: {cloud.private_key}\n"
            )
            handle = cvr.CloudVmRayResourceHandle(
                cluster_name=cluster_name,
                cluster_name_on_cloud=f"{cluster_name}-test",
                cluster_yaml=str(template),
                launched_nodes=task.num_nodes,
                launched_resources=to_provision,
                stable_internal_external_ips=[(host.address, host.address)],
                stable_ssh_ports=[22],
            )
            global_user_state.add_or_update_cluster(cluster_name, handle, set(task.resources), ready=True)
            return handle, False

        def set_autostop(
            self, handle: Any, idle_minutes: int, down: bool = False, stream_logs: bool = True
        ) -> None:
            cloud.autostop[handle.cluster_name] = idle_minutes
            global_user_state.set_cluster_autostop_value(handle.cluster_name, idle_minutes, down)

        def teardown_no_lock(self, handle: Any, terminate: bool, purge: bool = False, **kwargs: Any) -> None:
            cloud.terminated.append(handle.cluster_name)
            global_user_state.remove_cluster(handle.cluster_name, terminate=True)

    return NetnsBackend()


@contextmanager
def install(cloud: Cloud) -> Iterator[None]:
    """Make every launcher in this process use ``cloud`` (a generator for a fixture)."""
    from runhouse.compute import sky

    old = sky.BACKEND
    sky.BACKEND = lambda: netns_backend(cloud)
    try:
        yield
    finally:
        sky.BACKEND = old
