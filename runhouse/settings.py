"""Settings for the client and the daemon, read in one place.

Precedence, highest first: environment variables (``RH_*``), then ``$RH_HOME/config.yaml``
(``~/.rh/config.yaml`` by default), then the defaults below. This is the only module that reads
``os.environ``; everything else receives a :class:`Settings` object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from runhouse.exceptions import ConfigError

DEFAULT_PORT = 32300


@dataclass(frozen=True)
class Settings:
    """Typed settings. ``home`` holds tokens, pid files and logs (mode 0700)."""

    home: Path = field(default_factory=lambda: Path("~/.rh").expanduser())
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # a Den token (issue: Den); cluster tokens live in `home`
    log_level: str = "INFO"
    max_body_mb: int = 2048
    worker_threads: int = 64

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def daemon_dir(self, port: int | None = None) -> Path:
        """Where the daemon serving ``port`` keeps its pid file, token and log."""
        return self.home / "daemons" / str(port or self.port)


_ENV_KEYS = {
    "RH_HOME": "home",
    "RH_HOST": "host",
    "RH_PORT": "port",
    "RH_TOKEN": "token",
    "RH_LOG_LEVEL": "log_level",
    "RH_MAX_BODY_MB": "max_body_mb",
    "RH_WORKER_THREADS": "worker_threads",
}


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds[name]
    try:
        if name == "home":
            return Path(str(value)).expanduser()
        if kind == "int":
            return int(value)
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


def child_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process we spawn (daemon, worker): ours plus ``extra``."""
    env = dict(os.environ)
    env.update(extra or {})
    return env
