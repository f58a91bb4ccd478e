"""SkyPilot without a cloud, for on-demand cluster tests and bench/ondemand.py.

SkyPilot runs for real: ``sky.Resources``/``sky.Task`` validation, the optimizer choosing from the
catalog files written here (a tiny AWS/GCP catalog, as ``~/.sky/catalogs`` would hold), the launch
stages, its cluster records in ``~/.sky`` (so ``sky status`` sees the clusters) and its teardown
path. Only SkyPilot's backend steps that reach a cloud or SkyPilot's runtime on a new machine are
replaced (:func:`netns_backend`): ``_provision`` hands back network-namespace SSH hosts
(``tests/sshhosts.py``, with uv where SkyPilot's runtime setup puts it) with a cluster template
naming their user and key, as SkyPilot's own would;
``set_autostop`` records the minutes in SkyPilot's state as the real one does after telling the
machine's skylet; ``teardown_no_lock`` removes the record instead of calling the cloud.

SkyPilot reads ``HOME`` when it is imported (catalog folder, state database), so :func:`sky_home`
must run before anything imports ``sky`` in the process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
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
# SkyPilot's Kubernetes image catalog (its default images by tag), as ~/.sky/catalogs holds it
KUBE_IMAGES = """\
Tag,ImageId
skypilot:custom-cpu-ubuntu-2004,docker.io/skypilot/cpu:test
skypilot:custom-gpu-ubuntu-2004,docker.io/skypilot/gpu:test
"""
#: the stand-in for ``kubectl port-forward`` in a pod's SSH proxy command (see kube_proxy.py)
KUBE_PROXY = Path(__file__).with_name("kube_proxy.py")
# what the provider's credential variables pointed at while SkyPilot provisioned
CREDENTIAL_VARIABLES = ("AWS_SHARED_CREDENTIALS_FILE", "KUBECONFIG", "GOOGLE_APPLICATION_CREDENTIALS")


_home: list[Path] = []  # the first home made in this process: SkyPilot keeps the paths it read at import


def make_sky_home(home: Path) -> Path:
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
    (catalogs / "kubernetes").mkdir(parents=True, exist_ok=True)
    (catalogs / "kubernetes" / "images.csv").write_text(KUBE_IMAGES)
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
    nodes: list[str] = field(default_factory=list)  # every node's address, the head's first


@dataclass
class Pod:
    """A pod SkyPilot's Kubernetes provisioner would have created, with the spec SkyPilot computed
    for it (its real ``make_deploy_resources_variables``) and the namespace it read from the
    kubeconfig in effect."""

    name: str
    cluster: str
    context: str
    namespace: str
    cpus: str
    memory: str
    gpus: str
    image: str
    host: str  # address:port of the netns host's sshd standing in for the pod


@dataclass
class Cloud:
    """The test's cloud: the hosts it hands out and what it was asked."""

    hosts: list[Any]  # sshhosts.Host, handed out in order
    private_key: Path
    provisioned: list[Provisioned] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    autostop: dict[str, int] = field(default_factory=dict)
    autodown: dict[str, bool] = field(default_factory=dict)
    # Kubernetes: the nodes its API server lists, the pods "created" and those deleted since
    kube_nodes: list[dict[str, Any]] = field(default_factory=list)
    kube_calls: list[str] = field(default_factory=list)
    pods: dict[str, Pod] = field(default_factory=dict)
    deleted_pods: list[str] = field(default_factory=list)
    pod_addresses: Path | None = None  # pod name -> address, read by the proxy command

    def head_of(self, cluster: str) -> Any:
        """The host standing in for ``cluster``'s head (its latest launch), or None."""
        for launch in reversed(self.provisioned):
            if launch.cluster == cluster:
                return next((h for h in self.hosts if h.address == launch.host), None)
        return None

    def take(self, n: int = 1) -> list[Any]:
        """``n`` hosts no cluster that is still up holds."""
        used = {a for p in self.provisioned if p.cluster not in self.terminated for a in p.nodes or [p.host]}
        free = [h for h in self.hosts if h.address not in used]
        if len(free) < n:
            raise RuntimeError(f"the test cloud has {len(free)} free hosts, not {n}")
        return free[:n]


def netns_backend(cloud: Cloud) -> Any:
    """A SkyPilot ``CloudVmRayBackend`` whose cloud is ``cloud`` (see the module docstring)."""
    import sky
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
            nodes = cloud.take(task.num_nodes)
            host = nodes[0]
            for node in nodes:
                skypilot_runtime(node)
            seen = {}
            for variable in CREDENTIAL_VARIABLES:
                path = os.environ.get(variable)
                if path and os.path.exists(path):
                    seen[variable] = (os.stat(path).st_mode & 0o777, Path(path).read_text())
            cloud.provisioned.append(
                Provisioned(cluster_name, to_provision, host.address, seen, [n.address for n in nodes])
            )
            # the cluster template SkyPilot writes at provisioning holds the SSH user and key
            generated = Path(os.path.expanduser("~/.sky/generated"))
            generated.mkdir(parents=True, exist_ok=True)
            template = generated / f"{cluster_name}.yml"
            if isinstance(to_provision.cloud, sky.Kubernetes):
                proxy = _create_pod(cloud, cluster_name, to_provision, f"{host.address}:{host.port}")
                template.write_text(
                    f"cluster_name: {cluster_name}\nprovider:\n  module: sky.provision.kubernetes\n"
                    f"auth:\n  ssh_user: root\n  ssh_private_key: {cloud.private_key}\n"
                    f"  ssh_proxy_command: {proxy}\n"
                )
            else:
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
                stable_internal_external_ips=[(n.address, n.address) for n in nodes],
                stable_ssh_ports=[n.port for n in nodes],
            )
            global_user_state.add_or_update_cluster(cluster_name, handle, set(task.resources), ready=True)
            return handle, False

        def set_autostop(
            self, handle: Any, idle_minutes: int, down: bool = False, stream_logs: bool = True
        ) -> None:
            cloud.autostop[handle.cluster_name] = idle_minutes
            cloud.autodown[handle.cluster_name] = down
            # what SkyPilot's set_autostop runs on the head (autostop_lib.set_autostop): the
            # setting and the idle clock's start, in the head's skylet state
            head = cloud.head_of(handle.cluster_name)
            if head is not None:
                _skylet_set_autostop(skylet_db(head), idle_minutes, self.NAME, down)
            global_user_state.set_cluster_autostop_value(handle.cluster_name, idle_minutes, down)

        def teardown_no_lock(self, handle: Any, terminate: bool, purge: bool = False, **kwargs: Any) -> None:
            cloud.terminated.append(handle.cluster_name)
            for name in [n for n, pod in cloud.pods.items() if pod.cluster == handle.cluster_name]:
                cloud.deleted_pods.append(name)  # what SkyPilot's Kubernetes teardown deletes
                del cloud.pods[name]
            _write_pod_addresses(cloud)
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


def _create_pod(cloud: Cloud, cluster_name: str, to_provision: Any, address: str) -> str:
    """Record the pod SkyPilot would create for ``cluster_name`` (spec from SkyPilot's own
    deploy variables, namespace from the kubeconfig in effect) and return the SSH proxy command
    that reaches it, as SkyPilot's port-forward proxy would (by pod name, not address)."""
    from sky import clouds
    from sky.provision.kubernetes import utils as kube_utils
    from sky.utils import resources_utils

    context = to_provision.region
    variables = to_provision.cloud.make_deploy_resources_variables(
        to_provision,
        resources_utils.ClusterName(cluster_name, f"{cluster_name}-test"),
        clouds.Region(context),
        None,
        1,
    )
    pod = Pod(
        name=f"{cluster_name}-test-head",
        cluster=cluster_name,
        context=context,
        namespace=kube_utils.get_kube_config_context_namespace(context),
        cpus=str(variables["cpus"]),
        memory=str(variables["memory"]),
        gpus=str(variables["accelerator_count"]),
        image=str(variables["image_id"]),
        host=address,
    )
    cloud.pods[pod.name] = pod
    _write_pod_addresses(cloud)
    return f"{sys.executable} {KUBE_PROXY} {cloud.pod_addresses} {pod.name}"


def _write_pod_addresses(cloud: Cloud) -> None:
    if cloud.pod_addresses is None:
        cloud.pod_addresses = Path(tempfile.mkdtemp(prefix="rh-kube-lab-")) / "pods.json"
    cloud.pod_addresses.write_text(json.dumps({name: pod.host for name, pod in cloud.pods.items()}))


class _CoreApi:
    """The Kubernetes API server's answers SkyPilot asks for before provisioning: the nodes (with
    their CPUs, memory and GPU labels) it checks a request fits on. Any other call fails loudly,
    so a SkyPilot that starts asking for more is noticed rather than answered wrongly."""

    def __init__(self, cloud: Cloud, context: str | None) -> None:
        self.cloud = cloud
        self.context = context

    def list_node(self, **_: Any) -> Any:
        from kubernetes import client

        self.cloud.kube_calls.append(f"list_node {self.context}")
        nodes = []
        for spec in self.cloud.kube_nodes:
            capacity = {"cpu": str(spec["cpus"]), "memory": spec["memory"]}
            labels = {}
            if spec.get("gpu"):
                capacity["nvidia.com/gpu"] = str(spec.get("gpu_count", 1))
                labels["skypilot.co/accelerator"] = spec["gpu"]
            nodes.append(
                client.V1Node(
                    metadata=client.V1ObjectMeta(name=spec["name"], labels=labels),
                    status=client.V1NodeStatus(capacity=capacity, allocatable=dict(capacity)),
                )
            )
        return client.V1NodeList(items=nodes)

    def list_pod_for_all_namespaces(self, **_: Any) -> Any:
        from kubernetes import client

        self.cloud.kube_calls.append(f"list_pod_for_all_namespaces {self.context}")
        return client.V1PodList(items=[])

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"SkyPilot made a Kubernetes API call the test lab does not answer: {name}")


@contextmanager
def kube_api(cloud: Cloud) -> Iterator[None]:
    """Answer SkyPilot's Kubernetes API calls from ``cloud`` instead of an API server: SkyPilot's
    ``core_api(context)`` still loads the kubeconfig for the context for real (so a missing or
    broken kubeconfig or context fails as it would), then talks to :class:`_CoreApi`."""
    from sky.adaptors import kubernetes as adaptor

    real_load = adaptor._load_config
    old = adaptor.core_api

    def core_api(context: str | None = None) -> Any:
        real_load(context)
        return _CoreApi(cloud, context)

    adaptor.core_api = core_api
    try:
        yield
    finally:
        adaptor.core_api = old


def write_kubeconfig(path: Path, contexts: list[str], namespace: str | None = None) -> Path:
    """A kubeconfig with ``contexts`` (the first current) on a server nothing listens at: every
    call that reached it would fail, so the test shows none does."""
    context_entries = []
    for name in contexts:
        entry: dict[str, Any] = {"cluster": "lab", "user": "lab-user"}
        if namespace:
            entry["namespace"] = namespace
        context_entries.append({"name": name, "context": entry})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "lab-user", "user": {"token": "lab-token"}}],
        "contexts": context_entries,
        "current-context": contexts[0],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def skylet_db(host: Any) -> Path:
    """SkyPilot's skylet state on ``host`` (``~/.sky/skylet_config.db`` in its HOME)."""
    return Path(host.home) / ".sky" / "skylet_config.db"


def skylet_last_active(host: Any) -> float:
    """The time SkyPilot's autostop counts ``host``'s idleness from (``autostop_lib.get_last_active_time``
    on the head: -1 when unset)."""
    import sqlite3

    with sqlite3.connect(skylet_db(host)) as conn:
        row = conn.execute("SELECT value FROM config WHERE key = 'autostop_last_active_time'").fetchone()
    return float(row[0]) if row else -1.0


def _skylet_set_autostop(db: Path, idle_minutes: int, backend: str, down: bool) -> None:
    import pickle
    import sqlite3
    import time

    import psutil
    from sky.skylet import autostop_lib

    config = autostop_lib.AutostopConfig(idle_minutes, psutil.boot_time(), backend, down)
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT OR REPLACE INTO config VALUES ('autostop_config', ?)", (pickle.dumps(config),))
        conn.execute(
            "INSERT OR REPLACE INTO config VALUES ('autostop_last_active_time', ?)", (str(time.time()),)
        )


def skypilot_runtime(host: Any) -> None:
    """What SkyPilot's provisioning leaves on every node that our bootstrap uses: uv in
    ``~/.local/bin`` (its runtime setup runs uv's installer there, ``SKY_UV_INSTALL_CMD`` in
    sky/skylet/constants.py). Here a copy of this machine's uv binary stands in for the download."""
    import shutil

    uv = Path(sys.executable).with_name("uv")
    found = str(uv) if uv.is_file() else shutil.which("uv")
    if found is None:
        return  # the bootstrap brings uv with pip instead, as on a host without it
    target = Path(host.home) / ".local" / "bin" / "uv"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(found, target)
