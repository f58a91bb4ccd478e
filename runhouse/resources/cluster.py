"""``rh.cluster``: a machine (or group of machines) running a runhouse daemon.

::

    here = rh.cluster(name="local", host="localhost", server_connection_type="none").up_if_not()
    here.put("k", obj); here.get("k"); here.keys(); here.delete("k")
    here.run(["nproc"])           # [(rc, stdout, stderr)]
    here.teardown()               # stops the daemon

This module covers clusters whose daemon runs on this machine; remote kinds build on it.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from runhouse.client.daemon_client import DaemonClient
from runhouse.client.transport import Endpoint
from runhouse.compute import local
from runhouse.exceptions import ConfigError, ObjectNotFound
from runhouse.resources.env import DEFAULT_ENV_NAME, Env, resolve_env
from runhouse.resources.resource import Resource
from runhouse.resources.sync import sync_folder
from runhouse.settings import Settings, load_settings

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
        self.default_env = default_env

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

    def _require_local(self, what: str) -> None:
        if not self.is_local():
            raise ConfigError(
                f"{what} for host {self.head!r} needs SSH cluster support, which is not available yet"
            )

    # -- connection -------------------------------------------------------------------------
    @cached_property
    def client(self) -> DaemonClient:
        self._require_local("connecting")
        token = local.read_token(self.settings, self.server_port)
        return DaemonClient(Endpoint("127.0.0.1", self.server_port), token)

    def _reset_client(self) -> None:
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()

    def is_up(self) -> bool:
        """Whether the daemon answers its health check."""
        if not self.is_local():
            return False
        return local.ping("127.0.0.1", self.server_port) is not None

    def up(self) -> Cluster:
        """Start the daemon (and its default worker) if it is not running.

        A ``default_env``'s env vars are set in the daemon's own environment (so every worker
        inherits them) and its requirements and setup commands are installed into the daemon's
        Python environment before the first call.
        """
        self._require_local("starting a daemon")
        extra = self.default_env.env_vars if self.default_env is not None else {}
        local.start_daemon(self.settings, "127.0.0.1", self.server_port, extra_env=extra)
        self._reset_client()
        self.client.check()
        if self.default_env is not None and not self.default_env.is_reference:
            self.ensure_env(self.default_env, as_default=True)
        return self

    def up_if_not(self) -> Cluster:
        if not self.is_up():
            self.up()
        return self

    def restart_server(self) -> Cluster:
        """Stop the daemon (objects in its workers are lost) and start a fresh one."""
        self._require_local("restarting a daemon")
        local.stop_daemon(self.settings, self.server_port)
        return self.up()

    def teardown(self) -> None:
        """Stop the daemon and its workers."""
        self._require_local("tearing down")
        local.stop_daemon(self.settings, self.server_port)
        self._reset_client()

    def status(self) -> dict[str, Any]:
        return self.client.status()

    # -- envs and code -------------------------------------------------------------------------
    def ensure_env(self, env: Env, as_default: bool = False) -> dict[str, Any]:
        """Create or update ``env`` on the cluster (installing its packages, with progress shown);
        return the config the daemon built it from."""
        config = env.wire_config(self)
        if as_default:
            if config.get("venv") or config.get("conda"):
                raise ConfigError(
                    "a cluster's default_env shares the daemon's Python: it cannot use venv or conda"
                )
            config["name"] = DEFAULT_ENV_NAME
        if not config.get("ref"):
            self.client.ensure_env(config)
        return config

    def sync(self, folder: str | Path) -> str:
        """Copy a local folder to the cluster (only files that changed); return its path there."""
        return str(sync_folder(self.client, Path(folder))["dest"])

    # -- objects ------------------------------------------------------------------------------
    def put(self, key: str, obj: Any, env: Env | str | None = None) -> None:
        env_name = None
        if env is not None:
            env_obj = resolve_env(env)
            self.ensure_env(env_obj)
            env_name = env_obj.env_name
        self.client.put(key, obj, env=env_name)

    def get(self, key: str, default: Any = ..., remote: bool = False) -> Any:
        """The object under ``key``, unpickled here; with ``remote=True`` a stub for it instead."""
        try:
            if remote:
                return self._stub(key)
            return self.client.get(key)
        except ObjectNotFound:
            if default is ...:
                raise
            return default

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
        return self.client.keys(resolve_env(env).env_name if env is not None else None)

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
        cwd: str | None = None,
        env_vars: dict[str, str] | None = None,
        stop_on_error: bool = False,
    ) -> list[tuple[int, str, str]]:
        """Run shell commands on the cluster: ``[(returncode, stdout, stderr), ...]``, one per command."""
        cmds = [commands] if isinstance(commands, str) else list(commands)
        results = self.client.run_bash(cmds, cwd=cwd, env_vars=env_vars, stop_on_error=stop_on_error)
        return [(int(r[0]), str(r[1]), str(r[2])) for r in results]

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
                "default_env": self.default_env.config() if self.default_env else None,
            }
        )
        return cfg

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Cluster:
        default_env = Env._from_config(config["default_env"]) if config.get("default_env") else None
        return cls(
            name=config.get("name"),
            host=config.get("host", "localhost"),
            server_port=config.get("server_port"),
            server_connection_type=config.get("server_connection_type", "none"),
            default_env=default_env,
        )

    def __repr__(self) -> str:
        return f"<Cluster {self.name!r} {self.head}:{self.server_port}>"


def cluster(
    name: str | None = None,
    host: str | list[str] | None = None,
    server_port: int | None = None,
    server_connection_type: str | None = None,
    default_env: Env | None = None,
    instance_type: str | None = None,
    provider: str | None = None,
    **kwargs: Any,
) -> Cluster:
    """A cluster handle. ``rh.cluster(name="local", host="localhost", server_connection_type="none")``."""
    if instance_type is not None or provider is not None:
        raise ConfigError(
            f"on-demand clusters (instance_type={instance_type!r}, provider={provider!r}) need a cloud "
            "launcher, which this installation does not have; use host='localhost' or an existing host"
        )
    if kwargs:
        raise ConfigError(f"unknown rh.cluster argument(s): {', '.join(sorted(kwargs))}")
    if host is None:
        raise ConfigError("rh.cluster needs host= (e.g. host='localhost')")
    connection = server_connection_type or ("none" if (host in LOCAL_HOSTS) else "ssh")
    return Cluster(
        name=name,
        host=host,
        server_port=server_port,
        server_connection_type=connection,
        default_env=default_env,
    )


def here() -> Cluster:
    """The daemon on this machine, at the configured port."""
    return Cluster(name="here", host="localhost", server_connection_type="none")
