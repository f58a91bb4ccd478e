"""Settings for the client and the daemon, read in one place.

Precedence, highest first: environment variables (``RH_*``), then ``$RH_HOME/config.yaml``
(``~/.rh/config.yaml`` by default), then the defaults below. This is the only module that reads
``os.environ``; everything else receives a :class:`Settings` object.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from runhouse.exceptions import ConfigError

DEFAULT_PORT = 32300
DEFAULT_DEN_URL = "http://127.0.0.1:8420"  # where `runhouse login` looks when no Den URL is given


@dataclass(frozen=True)
class Settings:
    """Typed settings. ``home`` holds tokens, pid files and logs (mode 0700)."""

    home: Path = field(default_factory=lambda: Path("~/.rh").expanduser())
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # a Den user token (`runhouse login`); cluster tokens live in `home`
    den_url: str | None = None  # the Den registry this client saves to and loads from
    username: str | None = None  # the Den user the token belongs to (written by `runhouse login`)
    den_heartbeat_s: float = 60.0  # how often a daemon with a Den identity reports its status and usage
    den_auth_ttl_s: float = 30.0  # how long a den_auth daemon trusts Den's answer about a caller
    log_level: str = "INFO"
    max_body_mb: int = 2048
    worker_threads: int = 64
    max_header_kb: int = 64  # a request's line plus headers; more is refused (431) before authentication
    header_timeout_s: float = 30.0  # a request's headers must arrive within this, from its first byte (408)
    body_timeout_s: float = 30.0  # a request body that stalls this long is refused (408)
    max_connections: int = 1024  # past it, a new connection closes the oldest idle or unfinished one
    ssh_host_key_policy: str = "accept-new"  # for hosts not yet in $RH_HOME/known_hosts: or "strict"
    ray_address: str | None = None  # a multi-node daemon's Ray GCS (ip:port), set by its bring-up

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def logged_in(self) -> bool:
        """Whether saves and loads by plain name go to Den (a token and a Den URL are configured)."""
        return bool(self.token and self.den_url)

    def daemon_dir(self, port: int | None = None) -> Path:
        """Where the daemon serving ``port`` keeps its pid file, token and log."""
        return self.home / "daemons" / str(port or self.port)

    def make_daemon_dir(self, port: int | None = None) -> Path:
        """:meth:`daemon_dir`, made if missing, with it, ``home`` and ``home/daemons`` 0700 (a
        home made looser by an older version or a umask is tightened)."""
        folder = private_dir(self.daemon_dir(port))
        for path in (self.home, self.home / "daemons", folder):
            if path.stat().st_mode & 0o077:
                path.chmod(0o700)
        return folder


_ENV_KEYS = {
    "RH_HOME": "home",
    "RH_HOST": "host",
    "RH_PORT": "port",
    "RH_TOKEN": "token",
    "RH_DEN_URL": "den_url",
    "RH_USERNAME": "username",
    "RH_DEN_HEARTBEAT_S": "den_heartbeat_s",
    "RH_DEN_AUTH_TTL_S": "den_auth_ttl_s",
    "RH_LOG_LEVEL": "log_level",
    "RH_MAX_BODY_MB": "max_body_mb",
    "RH_WORKER_THREADS": "worker_threads",
    "RH_MAX_HEADER_KB": "max_header_kb",
    "RH_HEADER_TIMEOUT_S": "header_timeout_s",
    "RH_BODY_TIMEOUT_S": "body_timeout_s",
    "RH_MAX_CONNECTIONS": "max_connections",
    "RH_SSH_HOST_KEY_POLICY": "ssh_host_key_policy",
    "RH_RAY_ADDRESS": "ray_address",
}


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds[name]
    try:
        if name == "home":
            return Path(str(value)).expanduser()
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"setting {name!r} must be {kind}, got {value!r}") from e
    return value


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from the environment and the config file (see module docstring)."""
    env = dict(os.environ if environ is None else environ)
    home = Path(env.get("RH_HOME", "~/.rh")).expanduser()
    values: dict[str, Any] = {"home": home}
    config_file = home / "config.yaml"
    if config_file.exists():
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{config_file} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file} must hold a mapping of settings")
        known = {f.name for f in fields(Settings)}
        for key, value in loaded.items():
            if key in known and key != "home":
                values[key] = _coerce(key, value)
    for env_key, name in _ENV_KEYS.items():
        if env_key in env and env_key != "RH_HOME":
            values[name] = _coerce(name, env[env_key])
    return Settings(**values)


def private_dir(path: Path) -> Path:
    """``mkdir -p`` where every folder made is 0700, whatever the umask."""
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
    return path


def update_config_file(home: Path, set_values: dict[str, Any], remove: tuple[str, ...] = ()) -> Path:
    """Change ``$RH_HOME/config.yaml`` (mode 0600): set ``set_values``, drop ``remove``; keep the rest."""
    private_dir(home)
    path = home / "config.yaml"
    current: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        if isinstance(loaded, dict):
            current = loaded
    for key in remove:
        current.pop(key, None)
    current.update(set_values)
    tmp = path.with_name(".config.yaml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(current, f, sort_keys=True)
    os.replace(tmp, path)
    return path


def child_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process we spawn (daemon, worker): ours plus ``extra``."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


def provider_variables(names: Iterable[str]) -> dict[str, str]:
    """The set (non-empty) values of a cloud provider's own credential variables ``names`` (e.g.
    Azure's ``AZURE_CLIENT_ID``...), which its SDKs read from the environment rather than a file:
    ``rh.provider_secret("azure")`` collects them here, so only this module reads ``os.environ``."""
    return {name: os.environ[name] for name in names if os.environ.get(name)}


def kubeconfig_locations() -> str:
    """``KUBECONFIG`` as the Kubernetes client reads it (``:``-separated files), else
    ``~/.kube/config``."""
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def kubeconfig_path() -> Path:
    """The kubeconfig this machine's kubectl (and SkyPilot) use: the first existing file named in
    ``KUBECONFIG`` (a ``:``-separated list), else ``~/.kube/config``."""
    for part in (os.environ.get("KUBECONFIG") or "").split(os.pathsep):
        if part and Path(part).expanduser().is_file():
            return Path(part).expanduser()
    return Path("~/.kube/config").expanduser()
