"""``rh.cluster``: a machine (or group of machines) running a runhouse daemon.

::

    here = rh.cluster(name="local", host="localhost", server_connection_type="none").up_if_not()
    here.put("k", obj); here.get("k"); here.keys(); here.delete("k")
    here.run(["nproc"])           # [(rc, stdout, stderr)]
    here.teardown()               # stops the daemon

Where the daemon runs (this machine, one SSH host, ...) is the cluster's *kind*: a
:class:`~runhouse.compute.daemon.DaemonHost` that ``_make_daemon`` picks once. Everything else here
is the same for every kind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import psutil

from runhouse.client.daemon_client import DaemonClient
from runhouse.compute import local
from runhouse.compute.daemon import DaemonHost, DaemonSpec, DenIdentity, LocalDaemon
from runhouse.compute.remote import RemoteDaemon
from runhouse.compute.ssh import SSHCreds
from runhouse.exceptions import ConfigError, ObjectNotFound, RunhouseError
from runhouse.resources.calls import Options
from runhouse.resources.den import den_client
from runhouse.resources.env import DEFAULT_ENV_NAME, Env, env_from_config, resolve_env
from runhouse.resources.resource import Resource
from runhouse.resources.secret import secret
from runhouse.resources.store import local_name
from runhouse.resources.sync import check_syncable, folder_name, sync_folder
from runhouse.settings import Settings, load_settings, private_dir

log = logging.getLogger(__name__)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
CONNECTION_TYPES = ("none", "ssh", "tls")


class Cluster(Resource):
    RESOURCE_TYPE = "cluster"

    def __init__(
        self,
        name: str | None = None,
        host: str | list[str] = "localhost",
        server_port: int | None = None,
        server_connection_type: str = "none",
        default_env: Env | None = None,
        settings: Settings | None = None,
        ssh_creds: dict[str, Any] | SSHCreds | str | None = None,
        python: str | None = None,
        autostop_mins: float | None = None,
        den_auth: bool = False,
    ) -> None:
        super().__init__(name)
        hosts = [host] if isinstance(host, str) else list(host)
        if not hosts:
            raise ConfigError("a cluster needs at least one host")
        if server_connection_type not in CONNECTION_TYPES:
            raise ConfigError(f"server_connection_type must be one of {', '.join(CONNECTION_TYPES)}")
        self.hosts = hosts
        self._settings = settings
        self.server_port = int(server_port or self.settings.port)
        self.server_connection_type = server_connection_type
        # always an Env: the built-in default env (the daemon's own Python) when none is given
        self.default_env: Env = default_env if default_env is not None else Env(name=DEFAULT_ENV_NAME)
        self.python = python
        self.autostop_mins = autostop_mins
        self.den_auth = bool(den_auth)
        self.ssh_secret: str | None = None
        if isinstance(ssh_creds, str):
            ssh_creds, self.ssh_secret = _creds_from_secret(ssh_creds, self.settings)
        elif isinstance(ssh_creds, dict):
            ssh_creds = SSHCreds.from_dict(ssh_creds)
        self.ssh_creds = ssh_creds
        self._daemon: DaemonHost = self._make_daemon()

    # -- its kind: the one place that asks where the daemon runs --------------------------------
    def _make_daemon(self) -> DaemonHost:
        """The kind of this cluster. A new kind is a new :class:`DaemonHost`, returned here (or by a
        subclass overriding this); nothing else in the class changes."""
        spec = self._daemon_spec()
        if len(self.hosts) > 1:  # the first host runs the daemon and the Ray head, the others join
            from runhouse.compute.raycluster import RayClusterDaemon

            return RayClusterDaemon(spec)
        if self.is_local():
            return LocalDaemon(spec)
        return RemoteDaemon.from_spec(spec)

    def _daemon_spec(self) -> DaemonSpec:
        """What any kind needs to know about this cluster."""
        return DaemonSpec(
            name=self.name or self.head,
            hosts=tuple(self.hosts),
            port=self.server_port,
            connection_type=self.server_connection_type,
            settings=self.settings,
            ssh_creds=self.ssh_creds,
            python=self.python,
            autostop_mins=self.autostop_mins,
        )

    @property
    def _remote(self) -> DaemonHost:
        """The cluster's kind under its older name (tests reach the SSH kind's tunnel through it)."""
        return self._daemon

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def head(self) -> str:
        return self.hosts[0]

    def is_local(self) -> bool:
        return self.head in LOCAL_HOSTS

    # -- connection -------------------------------------------------------------------------
    @cached_property
    def client(self) -> DaemonClient:
        token = self._daemon.token()
        if token is None and self.den_auth and self.settings.logged_in:
            token = self._den_cluster_token()  # another user of a shared cluster: a token Den issues for it
            self._den_token = True
        return DaemonClient(self._daemon.endpoint(), token)

    @property
    def call_options(self) -> Options:
        """The options calls start from: pickles with the cluster's own token; ``json`` with a
        token Den issued to another user, whose read access allows data-only calls (users with
        write access may still ask for ``fn.options(serialization="pickle")``)."""
        self.client  # noqa: B018 - building the client decides which token it uses
        return _DATA_ONLY if self.__dict__.get("_den_token") else _DEFAULT_OPTIONS

    def _den_cluster_token(self) -> str:
        """A token for this cluster's daemon from Den, as the logged-in user (cached per process)."""
        if not self.rns_address or not self.rns_address.startswith("/"):
            raise ConfigError(
                f"cluster {self.name!r} uses den_auth but is not saved in Den; load it by its Den name "
                "(rh.cluster(name='/owner/name'))"
            )
        key = (str(self.settings.den_url), str(self.settings.token), self.rns_address)
        if key not in _CLUSTER_TOKENS:
            _CLUSTER_TOKENS[key] = den_client(self.settings).cluster_token(self.rns_address)
        return _CLUSTER_TOKENS[key]

    def _reset_client(self) -> None:
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()

    def is_up(self) -> bool:
        """Whether the daemon answers its health check."""
        if self._daemon.is_up():
            return True
        self._reset_client()
        return False

    def up(self) -> Cluster:
        """Start the daemon (and its default worker) if it is not running.

        A ``default_env``'s env vars are set in the daemon's own environment (so every worker
        inherits them) and its requirements and setup commands are installed into the daemon's
        Python environment before the first call.
        """
        extra = self.default_env.resolved_env_vars()
        identity = self._prepare_den_auth() if self.den_auth else None
        self._daemon.up(extra, den_identity=identity)
        self._den_event("cluster_up")
        self._reset_client()
        self.client.check()
        self._record_config()
        if not self.default_env.is_reference:
            self.ensure_env(self.default_env, as_default=True)
        return self

    def _prepare_den_auth(self) -> DenIdentity:
        """Save the cluster in Den (if it is not yet) and make its daemon a Den identity of its own:
        a daemon token Den issues for this cluster (the user's own token never leaves this machine)."""
        settings = self.settings
        if not settings.logged_in:
            raise ConfigError(
                "den_auth=True needs a Den login: run `runhouse login` (or set RH_TOKEN and RH_DEN_URL)"
            )
        if not self.rns_address or not self.rns_address.startswith("/"):
            if not self.name:
                raise ConfigError("a den_auth cluster needs a name to be saved in Den: rh.cluster(name=...)")
            self.save()
        assert self.rns_address is not None
        token = den_client(settings).daemon_token(self.rns_address)
        return DenIdentity(str(settings.den_url), self.rns_address, token)

    def _den_event(self, kind: str) -> None:
        """Tell Den (when logged in and this cluster is saved there) that the cluster went up or down.

        Usage reporting never gets in the way: a Den that cannot be reached is logged and skipped."""
        if not (self.settings.logged_in and self.rns_address and self.rns_address.startswith("/")):
            return
        try:
            den_client(self.settings).events([{"kind": kind, "cluster": self.rns_address}])
        except RunhouseError as e:
            log.warning("could not record %s of %s in Den: %s", kind, self.rns_address, e)

    def up_if_not(self) -> Cluster:
        if not self.is_up():
            self.up()
        return self

    def restart_server(self) -> Cluster:
        """Stop the daemon (objects in its workers are lost) and start a fresh one."""
        self._stop()
        return self.up()

    def teardown(self) -> None:
        """Stop the daemon and its workers (a static cluster's machines stay) and close tunnels."""
        self._stop()
        self._den_event("cluster_down")

    def _stop(self) -> None:
        self._reset_client()
        self._daemon.stop()

    # -- shells and files ----------------------------------------------------------------------
    def ssh(self, command: str | None = None) -> int:
        """Open an interactive shell on the head host, or run ``command`` there; returns its exit code."""
        return self._daemon.interactive_shell(command)

    def rsync(self, source: str, dest: str, up: bool = True, contents: bool = False) -> None:
        """Copy files to (``up=True``) or from the head host with rsync over SSH."""
        self._daemon.rsync(source, dest, up=up, contents=contents)

    def status(self) -> dict[str, Any]:
        """The daemon's state: ours (``workers``, ``calls_served``...) and the original's fields
        (``cluster_config``, ``runhouse_version``, ``server_pid``, ``env_servlet_processes`` with CPU
        and memory per env); on a multi-node cluster, ``nodes``: each node's ``address``, ``alive``,
        ``is_head``, ``cpus``, ``memory`` (bytes), ``gpus``, ``nvidia_smi`` (its GPUs, where
        nvidia-smi exists) and ``workers`` (``env`` and ``pid`` of each worker on it)."""
        return self.client.status()

    # -- where it is ------------------------------------------------------------------------------
    @property
    def ips(self) -> list[str]:
        """The cluster's hosts, head first."""
        return list(self.hosts)

    @property
    def address(self) -> str:
        """The head host."""
        return self.head

    @property
    def server_address(self) -> str:
        """The host this client sends requests to: ``localhost`` through an SSH tunnel or on this
        machine, else the head host."""
        return self._daemon.server_address

    @property
    def server_host(self) -> str:
        """The address the daemon binds on its host."""
        return self._daemon.bind_host

    @property
    def client_port(self) -> int | None:
        """The local port requests go to: the tunnel's once connected over SSH (None before), else
        the server port."""
        if not self._daemon.tunnelled:
            return self.server_port
        client = self.__dict__.get("client")
        return client.endpoint.port if client is not None else None

    @property
    def creds_values(self) -> dict[str, Any]:
        """The SSH credentials as a dict (``ssh_user``, ``ssh_private_key``, ``password``...); {} for
        a cluster on this machine."""
        if self.ssh_creds is None:
            return {}
        return {k: v for k, v in dataclasses.asdict(self.ssh_creds).items() if v is not None}

    def endpoint(self, external: bool = False) -> str | None:
        """The daemon's URL. ``external=True``: the URL others reach it at, or None when only an SSH
        tunnel reaches it; otherwise the URL this client uses (connecting first if needed)."""
        scheme = "https" if self.server_connection_type == "tls" else "http"
        if external:
            if self._daemon.tunnelled:
                return None
            return f"{scheme}://{self.server_address}:{self.server_port}"
        return str(self.client.endpoint.url)

    def on_this_cluster(self) -> bool:
        """Whether this code runs on this cluster (in one of its workers or shell commands)."""
        inside = _inside_cluster()
        if inside is None:
            return False
        settings, config = inside
        if config.get("rns_address") and self.rns_address:
            return bool(config["rns_address"] == self.rns_address)
        if (config.get("host") or ["localhost"])[0] in LOCAL_HOSTS:
            same = self._daemon.same_daemon(settings)  # the kind knows if files can tell
            if same is not None:
                return same
        return self.name is not None and config.get("name") == self.name and self.server_port == settings.port

    def _record_config(self) -> None:
        """Leave this cluster's config (without credentials) in the daemon's private folder, where
        ``rh.here`` in its workers and ``status()["cluster_config"]`` find it."""
        cfg = self.config()
        cfg.pop("ssh_creds", None)
        folder = '"${RH_HOME:-$HOME/.rh}/daemons/$RH_PORT"'  # the daemon's folder on its host
        text = shlex.quote(json.dumps(cfg))
        command = f"umask 077 && mkdir -p {folder} && printf %s {text} > {folder}/{local.CLUSTER_FILE}"
        (code, _, err), *_ = self.run([command])
        if code != 0:
            log.warning("could not record the config of cluster %s on it: %s", self.name, err.strip())

    # -- envs and code -------------------------------------------------------------------------
    def ensure_env(self, env: Env, as_default: bool = False, force_install: bool = False) -> dict[str, Any]:
        """Create or update ``env`` on the cluster (installing its packages, with progress shown);
        return the config the daemon built it from. ``force_install=True`` installs again and reruns
        setup commands even if the env is unchanged."""
        config = env.wire_config(self, force_install=force_install)
        if as_default:
            if config.get("venv") or config.get("conda"):
                raise ConfigError(
                    "a cluster's default_env shares the daemon's Python: it cannot use venv or conda"
                )
            config["name"] = DEFAULT_ENV_NAME
        if not config.get("ref"):
            self.client.ensure_env(config)
            config.pop("force", None)
        return config

    def sync(self, folder: str | Path) -> str:
        """Copy a local folder to the cluster (only files that changed); return its path there.

        Remote clusters get it with rsync over SSH, local ones through the daemon."""
        path = check_syncable(Path(folder))
        return self._daemon.sync_code(path, folder_name(path), self._sync_through_daemon)

    def _sync_through_daemon(self, folder: Path) -> str:
        return str(sync_folder(self.client, folder)["dest"])

    def code_root(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A code spec whose import root exists on the cluster (synced there for remote clusters)."""
        root = spec.get("root")
        if not self._daemon.needs_code_sync or not root or _installed(root):
            return spec
        return dict(spec, root=self.sync(root))

    # -- objects ------------------------------------------------------------------------------
    def put(self, key: str, obj: Any, env: Env | str | None = None) -> None:
        env_name = None
        if env is not None:
            env_obj = resolve_env(env)
            self.ensure_env(env_obj)
            env_name = env_obj.env_name
        self.client.put(key, obj, env=env_name)

    def get(self, key: str, default: Any = ..., remote: bool = False) -> Any:
        """The object under ``key``, unpickled here; with ``remote=True`` a stub for it instead.

        The name of an env on the cluster gives that env (bound to this cluster); a resource put
        with :meth:`put_resource` comes back as that resource."""
        try:
            if remote:
                return self._stub(key)
            value = self.client.get(key)
        except ObjectNotFound:
            found = self._env_named(key)
            if found is not None:
                return found
            if default is ...:
                raise
            return default
        if isinstance(value, dict) and set(value) == {_RESOURCE_MARK}:
            return Resource.from_config(value[_RESOURCE_MARK])
        return value

    def _env_named(self, name: str) -> Env | None:
        for info in self.client.envs():
            if info["name"] == name:
                if info.get("config"):
                    found = cast(Env, Env.from_config(info["config"]))
                    found.name = name
                else:
                    found = Env(name=name)
                found.system = self
                return found
        return None

    def put_resource(self, resource: Resource, env: Env | str | None = None) -> str:
        """Keep ``resource`` on the cluster under its name; ``cluster.get(name)`` gives it back.

        An env is set up on the cluster (as ``env.to(cluster)``); other resources are kept as their
        config. Returns the key."""
        if isinstance(resource, Env):
            resource.to(self)
            return resource.env_name
        if not isinstance(resource, Resource):
            raise ConfigError(f"put_resource takes a runhouse resource, got {type(resource).__name__}")
        if not resource.name:
            raise ConfigError("give the resource a name to put it on a cluster")
        self.put(resource.name, {_RESOURCE_MARK: resource.config()}, env=env)
        return resource.name

    def _stub(self, key: str) -> Any:
        info = self.client.resource(key)
        config = info.get("config") or {}
        stub_type = Resource.type_named(str(config.get("resource_type")))
        if stub_type is None or not hasattr(stub_type, "from_deployed"):
            raise ObjectNotFound(
                f"{key!r} is a plain object ({info.get('kind')}), not a function or module; "
                "use cluster.get(key) to fetch it",
                404,
            )
        return stub_type.from_deployed(self, key, config, resolve_env(info.get("env")))

    def keys(self, env: Env | str | None = None) -> list[str]:
        """Names of the objects on the cluster (in ``env``'s worker, if given); without ``env`` the
        names of the envs made on it as well (the built-in default env is not listed)."""
        if env is not None:
            return self.client.keys(resolve_env(env).env_name)
        keys = self.client.keys(None)
        envs = [e["name"] for e in self.client.envs() if e["name"] != DEFAULT_ENV_NAME]
        return keys + [name for name in envs if name not in keys]

    def rename(self, old_key: str, new_key: str) -> None:
        self.client.rename(old_key, new_key)

    def delete(self, keys: str | list[str]) -> dict[str, Any]:
        """Delete objects, or stop workers: ``cluster.delete("np_env")`` frees that env's process."""
        return self.client.delete([keys] if isinstance(keys, str) else list(keys))

    def envs(self) -> list[dict[str, Any]]:
        return self.client.envs()

    def run(
        self,
        commands: str | list[str],
        env: Env | str | None = None,
        stream_logs: bool = False,
        port_forward: Any = None,
        require_outputs: bool = True,
        node: str | None = None,
        run_name: str | None = None,
        cwd: str | None = None,
        env_vars: dict[str, str] | None = None,
        stop_on_error: bool = False,
    ) -> list[Any]:
        """Run shell commands on the cluster: ``[(returncode, stdout, stderr), ...]``, one per command.

        With ``env`` (an Env, which is set up first, or the name of an env on the cluster) they run
        in its context: its env vars, its venv or conda env first on PATH, its working dir.
        ``stream_logs=True`` prints each command's output here as it finishes;
        ``require_outputs=False`` returns only the return codes."""
        if port_forward is not None or run_name is not None:
            raise ConfigError(
                "cluster.run(port_forward=..., run_name=...) is not supported; leave them unset"
            )
        if node not in (None, self.head, "head"):
            raise ConfigError(
                f"cluster.run runs on the head node ({self.head!r}); node={node!r} is not supported"
            )
        cmds = [commands] if isinstance(commands, str) else list(commands)
        body: dict[str, Any] = {
            "commands": cmds,
            "cwd": cwd,
            "env_vars": env_vars or {},
            "stop_on_error": stop_on_error,
        }
        if env is not None:
            env_obj = resolve_env(env)
            self.ensure_env(env_obj)
            body["env"] = env_obj.env_name
        results = self.client.request_json("POST", "/run_bash", body)["results"]
        out = [(int(r[0]), str(r[1]), str(r[2])) for r in results]
        if stream_logs:
            for _code, stdout, stderr in out:
                sys.stdout.write(stdout)
                sys.stderr.write(stderr)
        return out if require_outputs else [code for code, _, _ in out]

    def logs(self, run_name: str) -> str:
        """Output recorded for a named run (``fn.options(run_name="r")(...)``)."""
        return str(self.client.logs(run_name)["output"])

    # -- metadata ---------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(
            {
                "host": self.hosts,
                "server_port": self.server_port,
                "server_connection_type": self.server_connection_type,
                "default_env": None if _builtin(self.default_env) else self.default_env.config(),
                "ssh_creds": self.ssh_secret or (self.ssh_creds.public() if self.ssh_creds else None),
                "python": self.python,
                "autostop_mins": self.autostop_mins,
                "den_auth": self.den_auth,
            }
        )
        return cfg

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Cluster:
        return cls(
            name=config.get("name"),
            host=config.get("host", "localhost"),
            server_port=config.get("server_port"),
            server_connection_type=config.get("server_connection_type", "none"),
            default_env=env_from_config(config.get("default_env")),
            ssh_creds=config.get("ssh_creds"),
            python=config.get("python"),
            autostop_mins=config.get("autostop_mins"),
            den_auth=bool(config.get("den_auth")),
        )

    def __repr__(self) -> str:
        return f"<Cluster {self.name!r} {self.head}:{self.server_port}>"

    # -- pickling: a cluster travels as its address; clients, tunnels and settings are rebuilt
    # lazily where it lands (a worker reads its own RH_HOME, where the daemon's token is) ---------
    def __getstate__(self) -> dict[str, Any]:
        skip = ("client", "_den_token", "_settings", "_daemon")  # the kind is rebuilt from the fields
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._settings = None
        self._daemon = self._make_daemon()


def cluster_from_config(config: dict[str, Any]) -> Cluster:
    """The cluster a nested config describes (of its own kind, remembering where it is saved)."""
    if config.get("resource_subtype") == "OnDemandCluster":
        from runhouse.resources import ondemand  # noqa: PLC0415 - ondemand imports this module

        return ondemand.from_config(config)
    return cast(Cluster, Cluster.from_config(config))


_CLUSTER_TOKENS: dict[tuple[str, str, str], str] = {}
_DEFAULT_OPTIONS = Options()
_DATA_ONLY = Options(serialization="json")


def _creds_from_secret(name: str, settings: Settings) -> tuple[SSHCreds, str]:
    """SSH credentials from a saved ssh secret.

    A secret in Den is read at every use (so a rotated key is picked up) and its key stays in
    memory; a local secret's key is written to a 0600 file under ``$RH_HOME/keys``."""
    loaded = secret(name=name)
    values = loaded.values
    if not values.get("ssh_user"):
        raise ConfigError(f"ssh secret {name!r} has no ssh_user; save it with values={{'ssh_user': ...}}")
    creds: dict[str, Any] = {
        "ssh_user": values["ssh_user"],
        "password": values.get("password"),
        "ssh_port": values.get("ssh_port") or 22,
    }
    if values.get("private_key"):
        if loaded.rns_address and loaded.rns_address.startswith("/"):
            creds["private_key_data"] = values["private_key"]
        else:
            folder = private_dir(settings.home / "keys")
            path = folder / local_name(name)
            if not path.exists() or path.read_text() != values["private_key"]:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(values["private_key"])
            creds["ssh_private_key"] = str(path)
    # configs keep the secret's full Den name, so another user loading them finds the same secret
    where = loaded.rns_address if loaded.rns_address and loaded.rns_address.startswith("/") else name
    return SSHCreds.from_dict(creds), where


def _installed(root: str) -> bool:
    """Whether code under ``root`` is an installed package (the cluster must install it, not sync it)."""
    return any(part in ("site-packages", "dist-packages") for part in Path(root).parts) or root.startswith(
        (sys.prefix, sys.base_prefix)
    )


def cluster(
    name: str | None = None,
    host: str | list[str] | None = None,
    server_port: int | None = None,
    server_connection_type: str | None = None,
    default_env: Env | None = None,
    ssh_creds: dict[str, Any] | str | None = None,
    python: str | None = None,
    autostop_mins: float | None = None,
    den_auth: bool = False,
    instance_type: str | None = None,
    provider: str | None = None,
    ips: list[str] | None = None,
    server_host: str | None = None,
    dryrun: bool = False,
    **kwargs: Any,
) -> Cluster:
    """A cluster handle.

    ``rh.cluster(name="local", host="localhost", server_connection_type="none")`` for this machine;
    ``rh.cluster(name="lab", host=["10.0.0.5"], ssh_creds={"ssh_user": "me", "ssh_private_key": "~/.ssh/id"})``
    for machines reached over SSH (``server_connection_type`` ``ssh`` (default), ``tls`` or ``none``;
    ``python`` picks the host's interpreter; ``autostop_mins`` stops an idle daemon).
    The original's ``ips=`` (for ``host=``), ``server_host=`` (what it would bind anyway) and
    ``dryrun=`` (a handle never connects until used) are accepted.
    """
    if instance_type is not None or provider is not None or set(kwargs).intersection(ONDEMAND_ARGUMENTS):
        return _ondemand(locals())
    if kwargs:
        raise ConfigError(f"unknown rh.cluster argument(s): {', '.join(sorted(kwargs))}")
    if ips is not None:  # the original's name for the hosts
        if host is not None and list([host] if isinstance(host, str) else host) != list(ips):
            raise ConfigError("give the hosts once: host= or ips=, not both")
        host = list(ips)
    if host is None and name is not None:
        from runhouse.resources import ondemand  # noqa: PLC0415 - ondemand imports this module

        try:
            return ondemand.load_cluster(name)  # of the class it was saved as
        except ObjectNotFound as e:
            raise ConfigError(
                f"rh.cluster needs host= (e.g. host='localhost') for a new cluster; {e.args[0]}"
            ) from None
    if host is None:
        raise ConfigError("rh.cluster needs host= (e.g. host='localhost'), or the name of a saved cluster")
    head = host if isinstance(host, str) else (host[0] if host else "")
    connection = server_connection_type or ("none" if head in LOCAL_HOSTS else "ssh")
    made = Cluster(
        name=name,
        host=host,
        server_port=server_port,
        server_connection_type=connection,
        default_env=default_env,
        ssh_creds=ssh_creds,
        python=python,
        autostop_mins=autostop_mins,
        den_auth=den_auth,
    )
    if server_host is not None and server_host != made.server_host:
        raise ConfigError(
            f"this cluster's daemon binds {made.server_host} (from server_connection_type="
            f"{connection!r}); server_host={server_host!r} cannot be honoured"
        )
    return made


# rh.cluster's arguments that only on-demand clusters take (rh.ondemand_cluster's, through SkyPilot)
ONDEMAND_ARGUMENTS = (
    "num_nodes",
    "use_spot",
    "region",
    "zone",
    "disk_size",
    "image_id",
    "memory",
    "cpus",
    "gpus",
    "open_ports",
    "namespace",
    "context",
    "provider_secret",
    "num_instances",  # the original's name for num_nodes
)


def _ondemand(args: dict[str, Any]) -> Cluster:
    """``rh.cluster(...)`` with ``instance_type=``/``provider=``: an on-demand cluster; refuses what
    only a cluster of given hosts takes."""
    from runhouse.resources import ondemand  # noqa: PLC0415 - ondemand imports this module

    unknown = sorted(set(args["kwargs"]).difference(ONDEMAND_ARGUMENTS))
    if unknown:
        raise ConfigError(
            f"unknown rh.cluster argument(s): {', '.join(unknown)}; on-demand clusters take "
            f"{', '.join(sorted(ONDEMAND_ARGUMENTS))}"
        )
    static = {
        k: args[k] for k in ("host", "ips", "ssh_creds", "python", "server_host") if args[k] is not None
    }
    if static:
        raise ConfigError(
            f"{', '.join(sorted(static))}: not for on-demand clusters (SkyPilot picks and reports the "
            "machines); drop them, or drop instance_type=/provider= for machines you have"
        )
    passed = {
        k: args[k]
        for k in ("server_port", "server_connection_type", "default_env", "autostop_mins")
        if args[k] is not None
    }
    return ondemand.ondemand_cluster(
        name=args["name"],
        instance_type=args["instance_type"],
        provider=args["provider"],
        den_auth=args["den_auth"],
        **passed,
        **args["kwargs"],
    )


def here() -> Cluster:
    """The cluster this code runs on: inside a cluster's worker (or shell command), that cluster
    (its name, port, default env; its token read from the daemon's private folder); elsewhere the
    daemon on this machine at the configured port."""
    inside = _inside_cluster()
    if inside is None:
        return Cluster(name="here", host="localhost", server_connection_type="none")
    settings, config = inside
    found = Cluster(
        name=config.get("name") or "here",
        host="localhost",
        server_port=settings.port,
        server_connection_type="none",
        default_env=env_from_config(config.get("default_env")),
        den_auth=bool(config.get("den_auth")),
    )
    found.rns_address = config.get("rns_address")
    return found


_RESOURCE_MARK = "__rh_resource_config__"


def _inside_cluster() -> tuple[Settings, dict[str, Any]] | None:
    """(settings, cluster config) when this process descends from the daemon its settings name
    (a daemon gives its workers and shell commands ``RH_PORT`` and ``RH_HOME``), else None."""
    settings = load_settings()
    pid = local.daemon_pid(settings, settings.port)
    if pid is None:
        return None
    try:
        if pid not in {p.pid for p in psutil.Process().parents()}:
            return None
    except psutil.Error:
        return None
    return settings, dict(local.cluster_config(settings, settings.port))


def _builtin(env: Env) -> bool:
    """Whether ``env`` is the built-in default env (nothing configured)."""
    return env.is_reference and env.name in (None, DEFAULT_ENV_NAME)
