"""``rh.ondemand_cluster``: a cluster whose machines SkyPilot launches on a cloud or Kubernetes.

::

    gpu = rh.cluster(name="rh-a10x", instance_type="A10G:1", provider="aws").up_if_not()
    gpu.status()["sky"]       # SkyPilot's view: UP, g5.xlarge, autostop...
    gpu.teardown()            # our daemon, then the machines (through SkyPilot)

``up()`` asks SkyPilot (:mod:`runhouse.compute.sky`) for the machines, showing its progress, then
brings our daemon up on the head over the SSH details SkyPilot reports, as for any SSH host
(:class:`~runhouse.compute.remote.RemoteDaemon`). Until then the cluster's kind is
:class:`~runhouse.compute.sky.NotLaunched`. The config keeps every argument and, once launched,
the head's address and how to log in, so a teammate who loads the saved cluster
(``rh.cluster(name="/alice/rh-a10x")``) reaches the same machines: the SSH key travels as a Den
secret shared along with the cluster, never in the config.

Credentials: SkyPilot uses this machine's (``sky check``), or a provider secret saved in Den
(``provider_secret="/alice/aws"``), written for the launch's duration to a 0600 file that only the
launch's environment names (:meth:`runhouse.resources.secret.Secret.provider_env`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from runhouse.compute.daemon import DaemonHost
from runhouse.exceptions import AuthError, ConfigError, RunhouseError
from runhouse.resources.cluster import ONDEMAND_ARGUMENTS, Cluster
from runhouse.resources.den import current_user, den_client
from runhouse.resources.env import Env, env_from_config
from runhouse.resources.resource import saved_config
from runhouse.resources.secret import Secret, secret
from runhouse.resources.store import LocalStore, den_address, local_name
from runhouse.settings import kubeconfig_path, load_settings

if TYPE_CHECKING:  # the sky extra is imported when a cluster is launched or looked up, not before
    from runhouse.compute.sky import Head, SkyLauncher, SkyRequest

#: the arguments SkyPilot gets, as configs record them (the original's names)
SKY_FIELDS = ("instance_type", "provider", *(f for f in ONDEMAND_ARGUMENTS if f != "num_instances"))


def _launcher() -> SkyLauncher:
    from runhouse.compute import sky  # noqa: PLC0415 - the optional extra, loaded on first use

    return sky.SkyLauncher()


class OnDemandCluster(Cluster):
    """A cluster on machines SkyPilot launches (see the module docstring)."""

    def __init__(
        self,
        name: str | None = None,
        instance_type: str | None = None,
        provider: str | None = None,
        num_nodes: int = 1,
        use_spot: bool = False,
        region: str | None = None,
        zone: str | None = None,
        disk_size: int | None = None,
        image_id: str | None = None,
        memory: str | int | None = None,
        cpus: str | int | None = None,
        gpus: str | None = None,
        open_ports: list[int | str] | int | str | None = None,
        autostop_mins: float | None = None,
        namespace: str | None = None,
        context: str | None = None,
        provider_secret: str | None = None,
        server_port: int | None = None,
        server_connection_type: str = "ssh",
        default_env: Env | None = None,
        ips: list[str] | None = None,
        ssh_creds: dict[str, Any] | str | None = None,
        den_auth: bool = False,
        internal_ips: list[str] | None = None,
    ) -> None:
        if not name:
            raise ConfigError(
                "an on-demand cluster needs a name (SkyPilot's cluster name): rh.cluster(name=...)"
            )
        if provider != "kubernetes" and (namespace is not None or context is not None):
            raise ConfigError("namespace= and context= are for provider='kubernetes'")
        ports = [open_ports] if isinstance(open_ports, int | str) else list(open_ports or [])
        self.instance_type = instance_type
        self.provider = provider
        self.num_nodes = int(num_nodes)
        self.use_spot = bool(use_spot)
        self.region = region
        self.zone = zone
        self.disk_size = disk_size
        self.image_id = image_id
        self.memory = None if memory is None else str(memory)
        self.cpus = None if cpus is None else str(cpus)
        self.gpus = gpus
        self.open_ports = ports
        self.namespace = namespace
        self.context = context
        self.provider_secret = provider_secret
        self.internal_ips = list(internal_ips or [])
        # refused now (by us or SkyPilot), not at launch; SkyPilot checks a Kubernetes context
        # against the kubeconfig, which may be the provider secret's
        if provider == "kubernetes":
            with self._credentials():
                _validate(self._request())
        else:
            _validate(self._request())
        # Cluster needs a host; until SkyPilot reports one, the kind is NotLaunched (see _make_daemon)
        self._launched = bool(ips)
        super().__init__(
            name=name,
            host=list(ips) if ips else [f"{name}.not-launched"],
            server_port=server_port,
            server_connection_type=server_connection_type,
            default_env=default_env,
            ssh_creds=ssh_creds if ips else None,
            autostop_mins=autostop_mins,
            den_auth=den_auth,
        )
        if not ips:
            self.hosts = []

    # -- what SkyPilot is asked for ---------------------------------------------------------------
    def _request(self) -> SkyRequest:
        from runhouse.compute.sky import SkyRequest  # noqa: PLC0415 - the optional extra

        return SkyRequest(
            provider=self.provider,
            instance_type=self.instance_type,
            num_nodes=self.num_nodes,
            use_spot=self.use_spot,
            region=self.context if self.provider == "kubernetes" and self.context else self.region,
            zone=self.zone,
            disk_size=self.disk_size,
            image_id=self.image_id,
            open_ports=tuple(self.open_ports),
            memory=self.memory,
            cpus=self.cpus,
            gpus=self.gpus,
        )

    @property
    def sky_name(self) -> str:
        """The cluster's name in SkyPilot (``sky status`` shows it)."""
        return str(self.name)

    # -- its kind ----------------------------------------------------------------------------------
    def _make_daemon(self) -> DaemonHost:
        if not getattr(self, "_launched", False):
            from runhouse.compute.sky import NotLaunched  # noqa: PLC0415 - the optional extra

            return NotLaunched(str(self.name))
        if len(self.hosts) > 1:
            return self._multi_node_daemon()
        return super()._make_daemon()  # the head's SSH details: an SSH host like any other

    def _multi_node_daemon(self) -> DaemonHost:
        """SkyPilot's nodes as a multi-node cluster (our daemon on the head, Ray across them). Ray's
        nodes meet at the addresses SkyPilot reports as internal (a cloud's private IPs), while
        SSH goes to the external ones. ``autostop_mins`` is SkyPilot's alone here: it stops every
        node when idle, which our daemon's own autostop cannot yet do on several nodes."""
        from dataclasses import replace  # noqa: PLC0415

        from runhouse.compute import raycluster  # noqa: PLC0415 - with the kind it serves
        from runhouse.compute.raynodes import RayHost, RayNodes  # noqa: PLC0415
        from runhouse.compute.ssh import pool_for  # noqa: PLC0415

        spec = replace(self._daemon_spec(), autostop_mins=None)
        daemon = raycluster.RayClusterDaemon(spec)
        internal = list(self.internal_ips or [])
        if internal and internal != list(self.hosts):
            if len(internal) != len(self.hosts):
                raise ConfigError(
                    f"SkyPilot reported {len(self.hosts)} node addresses but {len(internal)} internal ones"
                )
            assert spec.ssh_creds is not None
            daemon.ray = RayNodes(
                [
                    RayHost(h, spec.ssh_creds, node_ip=ip, python=spec.python, name=h)
                    for h, ip in zip(self.hosts, internal, strict=True)
                ],
                pool_for(spec.settings.home),
                raycluster.RAY_OPTIONS,
                progress=lambda message: print(message, file=sys.stderr, flush=True),
                host_key_policy=daemon.head.known_hosts.policy,
            )
        return daemon

    @property
    def head(self) -> str:
        return self.hosts[0] if self.hosts else f"{self.name}.not-launched"

    # -- lifecycle -----------------------------------------------------------------------------------
    def up(self) -> OnDemandCluster:
        """Launch the machines through SkyPilot unless they are up (SkyPilot prints its progress),
        then start our daemon on the head. A cluster loaded from someone else's save reuses their
        machines (and never launches new ones)."""
        launcher = _launcher()
        head = launcher.head(self.sky_name)
        if head is None and not (self._launched and launcher.state(self.sky_name) is None):
            with self._credentials():
                head = launcher.launch(self.sky_name, self._request(), self.autostop_mins)
        if head is not None:
            self._adopt(head)
        super().up()
        if self.autostop_mins is not None and self.autostop_mins >= 0:
            self._keep_skypilot_awake()
        if self.rns_address is None:  # so `runhouse cluster down NAME` finds its port and login;
            # not a save: a later .save() still goes to Den when logged in
            LocalStore(self.settings).save(local_name(str(self.name)), self._local_record())
        return self

    def _keep_skypilot_awake(self) -> None:
        """Start the keeper that tells SkyPilot's autostop about our calls (SkyPilot counts only
        its own jobs as activity; see :mod:`runhouse.compute.skyidle`), in the default worker."""
        from runhouse.compute import sky, skyidle  # noqa: PLC0415 - the optional extra
        from runhouse.resources.function import function  # noqa: PLC0415 - resources import clusters

        keeper = function(skyidle.keep_skypilot_awake).to(self, name="_rh_skypilot_awake")
        try:
            keeper(sky.KEEP_AWAKE_EVERY_S)
        finally:
            self.delete("_rh_skypilot_awake")

    def is_up(self) -> bool:
        return self._launched and super().is_up()

    def teardown(self) -> None:
        """Stop our daemon, then terminate the machines through SkyPilot (only the machine that
        launched them has SkyPilot's record; elsewhere this says so and terminates nothing)."""
        launcher = _launcher()
        if launcher.state(self.sky_name) is None:
            raise ConfigError(
                f"SkyPilot on this machine has no cluster {self.sky_name!r}: it was launched elsewhere (or is "
                "already down); its launcher tears it down"
            )
        if self._launched:
            with contextlib.suppress(RunhouseError, OSError):
                self._stop()
        with self._credentials():
            launcher.terminate(self.sky_name)
        self._den_event("cluster_down")
        self._launched = False
        self.hosts = []
        self.internal_ips = []
        self.ssh_creds = None
        self._daemon = self._make_daemon()

    def status(self) -> dict[str, Any]:
        """Our daemon's status (when it is up) with SkyPilot's record under ``sky`` (``status``:
        ``UP``/``STOPPED``/``INIT``, ``resources``, ``autostop_mins``, ``launched_at``; None where
        this machine's SkyPilot does not know the cluster)."""
        from runhouse.compute.sky import summary  # noqa: PLC0415 - the optional extra

        status: dict[str, Any] = super().status() if self.is_up() else {"daemon": "down"}
        record = _launcher().record(self.sky_name)
        status["sky"] = summary(record) if record is not None else None
        return status

    def _adopt(self, head: Head) -> None:
        """Take the machines SkyPilot reports: their addresses, and SkyPilot's SSH user and key
        (unless the config already names a Den secret holding that key)."""
        changed = list(head.ips) != self.hosts
        self.hosts = list(head.ips)
        self.internal_ips = list(head.internal_ips)
        if self.ssh_secret is None or changed:
            from runhouse.compute.ssh import SSHCreds  # noqa: PLC0415 - with the kind it serves

            self.ssh_creds = SSHCreds.from_dict(head.creds())
            self.ssh_secret = None
        self._launched = True
        self._reset_client()
        self._daemon = self._make_daemon()

    @contextlib.contextmanager
    def _credentials(self) -> Iterator[None]:
        """SkyPilot's environment for a launch or teardown: this machine's own credentials, or
        ``provider_secret``'s in a 0600 file for the duration; for Kubernetes with ``namespace=``,
        a kubeconfig naming it."""
        from runhouse.compute.sky import environment  # noqa: PLC0415 - the optional extra

        with contextlib.ExitStack() as stack:
            env: dict[str, str] = {}
            if self.provider_secret:
                env.update(stack.enter_context(_loaded_secret(self.provider_secret).provider_env()))
            if self.provider == "kubernetes" and (self.namespace or self.context):
                env["KUBECONFIG"] = stack.enter_context(
                    _kubeconfig_for(env.get("KUBECONFIG"), self.context, self.namespace)
                )
            stack.enter_context(environment(env))
            yield

    # -- usage in Den: who launched what, and (from cluster_up to cluster_down) for how long ---------
    def _den_event(self, kind: str) -> None:
        """Record ``kind`` for this cluster in Den when logged in: under its Den address, or, saved
        only on this machine (as ``up()`` saves it), under ``/<me>/<name>`` (Den takes usage of a
        cluster not saved yet in the caller's own namespace), so every launch is counted."""
        if not self.settings.logged_in:
            return
        address = self.rns_address if (self.rns_address or "").startswith("/") else None
        try:
            address = address or f"/{current_user(self.settings)}/{local_name(str(self.name))}"
            what = f"{self.provider or 'cheapest'}:{self.instance_type or self.cpus or 'default'}"
            if self.provider_secret:
                what += f" with {self.provider_secret}"
            den_client(self.settings).events([{"kind": kind, "cluster": address, "resource": what}])
        except RunhouseError as e:
            print(f"could not record {kind} of {address or self.name} in Den: {e}")

    # -- saving and sharing: the SSH key goes to Den as a secret, never into the config --------------
    def save(self, name: str | None = None, visibility: str | None = None) -> OnDemandCluster:
        settings = load_settings()
        target = den_address(name or self.rns_address or str(self.name), settings)
        creds = self.ssh_creds
        if target is not None and self._launched and self.ssh_secret is None and creds is not None:
            if not creds.ssh_private_key:
                raise ConfigError(f"SkyPilot gave no SSH key for {self.name!r}; it cannot be shared")
            if creds.ssh_proxy_command:
                raise ConfigError(
                    f"{self.name!r} is reached through SkyPilot's Kubernetes port-forward proxy, which runs with "
                    "the launcher's kubeconfig; sharing such a cluster in Den is not supported yet "
                    "(share the kubeconfig as rh.provider_secret('kubernetes') and let teammates launch their own)"
                )
            key = Secret(
                f"{target.rsplit('/', 1)[-1]}-ssh",
                {
                    "ssh_user": creds.ssh_user,
                    "private_key": Path(creds.ssh_private_key).read_text(),
                    "ssh_port": str(creds.ssh_port),
                },
                "ssh",
            )
            key.save(name=f"{target}-ssh")
            self.ssh_secret = f"{target}-ssh"
        super().save(name, visibility)
        return self

    def share(self, users: str | list[str], access_level: str = "read") -> None:
        """Share the cluster and the secret holding its SSH key (read: reach the machines)."""
        super().share(users, access_level)
        if self.ssh_secret and self.ssh_secret.startswith("/"):
            secret(name=self.ssh_secret).share(users, "read")

    # -- metadata --------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({f: getattr(self, f) for f in SKY_FIELDS})
        cfg["host"] = list(self.hosts)
        cfg["internal_ips"] = list(self.internal_ips)
        if not self._launched:
            cfg["ssh_creds"] = None
        return cfg

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> OnDemandCluster:
        return cls(
            name=config.get("name"),
            server_port=config.get("server_port"),
            server_connection_type=config.get("server_connection_type") or "ssh",
            default_env=env_from_config(config.get("default_env")),
            ips=list(config.get("host") or []),
            internal_ips=list(config.get("internal_ips") or []),
            ssh_creds=config.get("ssh_creds"),
            autostop_mins=config.get("autostop_mins"),
            den_auth=bool(config.get("den_auth")),
            **{f: config[f] for f in SKY_FIELDS if config.get(f) is not None},
        )

    def __repr__(self) -> str:
        where = self.head if self._launched else "not launched"
        return f"<OnDemandCluster {self.name!r} {self.provider}:{self.instance_type} {where}>"


def _validate(request: SkyRequest) -> None:
    from runhouse.compute.sky import resources  # noqa: PLC0415 - the optional extra

    resources(request)


def _loaded_secret(name: str) -> Secret:
    """The provider secret ``name``; one Den will not give this user says so before any launch."""
    try:
        loaded = secret(name=name)
    except AuthError as e:
        raise AuthError(
            f"provider secret {name!r} cannot be used: {e}. Nothing was launched; ask its owner to share it "
            f"with you (secret.share('<you>', access_level='read'))",
            e.status,
        ) from None
    if not loaded.values:
        raise ConfigError(f"provider secret {name!r} has no values")
    return loaded


@contextlib.contextmanager
def _kubeconfig_for(kubeconfig: str | None, context: str | None, namespace: str | None) -> Iterator[str]:
    """A 0600 copy of ``kubeconfig`` (else this machine's: ``$KUBECONFIG`` or ``~/.kube/config``)
    whose current context is ``context`` (SkyPilot launches only in the current context unless its
    own config allows others) and whose context uses ``namespace`` (SkyPilot creates its pods in
    the context's namespace); removed when the block ends."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    source = Path(kubeconfig).expanduser() if kubeconfig else kubeconfig_path()
    if not source.is_file():
        raise ConfigError(f"provider='kubernetes' needs a kubeconfig: {source} does not exist")
    config = yaml.safe_load(source.read_text()) or {}
    wanted = context or config.get("current-context")
    entries = [c for c in config.get("contexts") or [] if c.get("name") == wanted]
    if not entries:
        known = [c.get("name") for c in config.get("contexts") or []]
        raise ConfigError(f"kubeconfig {source} has no context {wanted!r} (it has {known})")
    config["current-context"] = wanted
    if namespace:
        entries[0].setdefault("context", {})["namespace"] = namespace
    folder = tempfile.mkdtemp(prefix="rh-kube-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        path = Path(folder) / "config"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f)
        yield str(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ondemand_cluster(
    name: str | None = None, num_instances: int | None = None, **kwargs: Any
) -> OnDemandCluster:
    """An on-demand cluster (the original's ``rh.ondemand_cluster``); ``num_instances`` is the
    original's name for ``num_nodes``. With only a name, loads the saved one."""
    if num_instances is not None:
        if kwargs.get("num_nodes") not in (None, num_instances):
            raise ConfigError("give the node count once: num_nodes= or num_instances=")
        kwargs["num_nodes"] = num_instances
    if name is not None and not kwargs:
        loaded = load_cluster(name)
        if not isinstance(loaded, OnDemandCluster):
            raise ConfigError(f"the saved cluster {name!r} is not an on-demand cluster")
        return loaded
    return OnDemandCluster(name=name, **kwargs)


def load_cluster(name: str) -> Cluster:
    """The saved cluster ``name``, of the class its config records (on-demand or not)."""
    config = saved_config(name)
    if config.get("resource_type") != "cluster":
        raise ConfigError(f"the saved resource {name!r} is a {config.get('resource_type')}, not a cluster")
    return from_config(config)


def from_config(config: dict[str, Any]) -> Cluster:
    """A cluster config as its own class: ``OnDemandCluster`` for the configs it writes."""
    kind = OnDemandCluster if config.get("resource_subtype") == "OnDemandCluster" else Cluster
    return cast(Cluster, kind.from_config(config))
