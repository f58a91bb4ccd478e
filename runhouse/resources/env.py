"""``rh.env`` and ``rh.conda_env``: the Python environment of a worker process.

::

    env = rh.env(reqs=["numpy", "./my_pkg", "-r requirements.txt"], env_vars={"OMP_NUM_THREADS": "2"},
                 setup_cmds=["mkdir -p /tmp/data"], name="np_env")
    fn = rh.function(np_sum).to(cluster, env=env)   # built on first use, then reused

Each env is one worker process on the cluster; objects sent with the same env share it. By default
the worker uses the daemon's Python environment (packages are installed there); ``venv=True``
gives the env a virtual environment of its own, so envs can hold conflicting versions of a package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from dotenv import dotenv_values

from runhouse.exceptions import ConfigError
from runhouse.resources.package import Package
from runhouse.resources.resource import Resource

if TYPE_CHECKING:
    from runhouse.resources.cluster import Cluster

DEFAULT_ENV_NAME = "default_env"


def _looks_like_path(entry: str) -> bool:
    return entry.startswith(("./", "../", "/", "~")) or entry in (".", "..")


def parse_reqs(reqs: list[str], base: Path | None = None) -> list[dict[str, str]]:
    """Normalize requirement strings to ``{"kind": "pip" | "local" | "conda", "spec": ...}``."""
    out: list[dict[str, str]] = []
    for raw in reqs:
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"requirement {raw!r} must be a non-empty string")
        entry = raw.strip()
        if entry.startswith("-r"):
            path = Path(entry[2:].lstrip(" =")).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            if not path.is_file():
                raise ConfigError(f"requirements file {path} (from {raw!r}) does not exist")
            lines = [ln.split(" #")[0].strip() for ln in path.read_text().splitlines()]
            out += parse_reqs([ln for ln in lines if ln and not ln.startswith("#")], path.parent)
        elif entry.startswith("pip:"):
            out.append({"kind": "pip", "spec": entry[4:].strip()})
        elif entry.startswith("conda:"):
            out.append({"kind": "conda", "spec": entry[6:].strip()})
        elif _looks_like_path(entry) or (base is not None and (base / entry).is_dir()):
            path = Path(entry).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            if not path.is_dir():
                raise ConfigError(f"local requirement {raw!r} is not a directory on this machine")
            out.append({"kind": "local", "spec": str(path.resolve())})
        else:
            out.append({"kind": "pip", "spec": entry})
    return out


def _env_vars(value: dict[str, Any] | str | None) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"env_vars file {path} does not exist")
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    raise ConfigError(f"env_vars must be a dict or the path of a .env file, got {type(value).__name__}")


def _env_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments every env kind shares, from a config."""
    keys = ("name", "reqs", "env_vars", "setup_cmds", "working_dir", "compute")
    return {key: config.get(key) for key in keys}


class Env(Resource):
    """A worker's environment: requirements, environment variables, setup commands, working dir."""

    RESOURCE_TYPE = "env"

    def __init__(
        self,
        name: str | None = None,
        reqs: list[str | Package] | str | Package | None = None,
        env_vars: dict[str, Any] | str | None = None,
        setup_cmds: list[str] | None = None,
        working_dir: str | None = None,
        compute: dict[str, Any] | None = None,
        venv: bool | str = False,
    ) -> None:
        super().__init__(name)
        if isinstance(reqs, str | Package):
            reqs = [reqs]
        self.reqs = [r.to_requirement() if isinstance(r, Package) else r for r in reqs or []]
        self._parsed_reqs = parse_reqs(self.reqs)
        self.env_vars = _env_vars(env_vars)
        self.setup_cmds = list(setup_cmds or [])
        if not all(isinstance(c, str) for c in self.setup_cmds):
            raise ConfigError("setup_cmds must be a list of shell command strings")
        self.working_dir = working_dir
        if compute is not None and not (
            isinstance(compute, dict) and all(isinstance(v, int | float) and v >= 0 for v in compute.values())
        ):
            raise ConfigError('compute must map resource names to amounts, e.g. {"CPU": 2, "GPU": 1}')
        self.compute = dict(compute or {})
        if venv is True and not name:
            raise ConfigError("venv=True needs the env to have a name (it names the virtual environment)")
        self.venv = (name if venv is True else venv) or None

    @property
    def env_name(self) -> str:
        return self.name or DEFAULT_ENV_NAME

    @property
    def is_reference(self) -> bool:
        """True when this env only names an env (nothing to build)."""
        return not (
            self.reqs
            or self.env_vars
            or self.setup_cmds
            or self.working_dir
            or self.venv
            or self._conda()
            or self.compute
        )

    def _conda(self) -> dict[str, Any] | None:
        return None

    def wire_config(self, system: Cluster | None = None) -> dict[str, Any]:
        """What the daemon needs to build this env; local folders are synced to ``system`` first."""
        if self.is_reference:
            return {"name": self.env_name, "ref": True}
        reqs = []
        for req in self._parsed_reqs:
            if req["kind"] == "local":
                if system is None:
                    raise ConfigError("a local requirement needs a cluster to sync to")
                req = {"kind": "local", "spec": system.sync(req["spec"])}
            reqs.append(req)
        working_dir = system.sync(self.working_dir) if (self.working_dir and system is not None) else None
        return {
            "name": self.env_name,
            "reqs": reqs,
            "env_vars": self.env_vars,
            "setup_cmds": self.setup_cmds,
            "working_dir": working_dir,
            "venv": self.venv,
            "conda": self._conda(),
            "compute": self.compute or None,
        }

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "reqs": self.reqs,
            "env_vars": self.env_vars,
            "setup_cmds": self.setup_cmds,
            "working_dir": self.working_dir,
            "compute": self.compute,
            "venv": self.venv,
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Env:
        return cls(**_env_kwargs(config), venv=config.get("venv") or False)


class CondaEnv(Env):
    """An env whose worker runs in a conda environment (``conda`` or ``micromamba`` on the cluster)."""

    RESOURCE_TYPE = "conda_env"

    def __init__(self, conda_env: dict[str, Any] | str, name: str | None = None, **kwargs: Any) -> None:
        spec: dict[str, Any] | None
        if isinstance(conda_env, dict):
            spec = conda_env
            conda_name = str(conda_env.get("name") or name or "")
        elif isinstance(conda_env, str) and Path(conda_env).expanduser().is_file():
            spec = yaml.safe_load(Path(conda_env).expanduser().read_text())
            if not isinstance(spec, dict):
                raise ConfigError(f"{conda_env} is not a conda environment file (a YAML mapping)")
            conda_name = str(spec.get("name") or name or "")
        elif isinstance(conda_env, str):
            spec, conda_name = None, conda_env  # an env that already exists on the cluster
        else:
            raise ConfigError("conda_env must be a dict, the path of an environment.yml, or an env name")
        if not conda_name:
            raise ConfigError("name the conda env: give the spec a 'name' or pass name=")
        super().__init__(name=name or conda_name, **kwargs)
        self.conda_name = conda_name
        self.conda_spec = spec

    def _conda(self) -> dict[str, Any] | None:
        return {"name": self.conda_name, "spec": self.conda_spec, "existing": self.conda_spec is None}

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["conda_env"] = self.conda_spec if self.conda_spec is not None else self.conda_name
        return cfg

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> CondaEnv:
        return cls(config["conda_env"], **_env_kwargs(config))


def env(
    reqs: list[str | Package] | None = None,
    env_vars: dict[str, Any] | str | None = None,
    name: str | None = None,
    setup_cmds: list[str] | None = None,
    working_dir: str | None = None,
    compute: dict[str, Any] | None = None,
    venv: bool | str = False,
) -> Env:
    """Describe a worker environment: ``rh.env(reqs=["numpy"], env_vars={"K": "v"}, name="np_env")``.

    ``reqs`` take PyPI specs, local package folders (``"./pkg"``), ``"pip:..."``, ``"conda:..."``,
    ``"-r requirements.txt"`` and ``rh.package(...)`` objects; ``env_vars`` a dict or a ``.env`` file;
    ``venv=True`` an isolated virtual environment. Unnamed envs mean the cluster's default env.
    """
    return Env(
        name=name,
        reqs=reqs,
        env_vars=env_vars,
        setup_cmds=setup_cmds,
        working_dir=working_dir,
        compute=compute,
        venv=venv,
    )


def conda_env(conda_env: dict[str, Any] | str, name: str | None = None, **kwargs: Any) -> CondaEnv:
    """A conda-backed env: ``rh.conda_env({"name": "ml", "dependencies": ["python=3.11"]})``,
    the path of an ``environment.yml``, or the name of a conda env that exists on the cluster."""
    return CondaEnv(conda_env, name=name, **kwargs)


def env_from_config(config: dict[str, Any] | None) -> Env | None:
    """The env a nested config describes, of its own kind (a conda env stays one), or None."""
    return cast(Env, Env.from_config(config)) if config else None


def resolve_env(value: Env | str | None) -> Env:
    if value is None:
        return Env()
    if isinstance(value, str):
        return Env(name=value)
    if isinstance(value, Env):
        return value
    raise ConfigError(f"env must be an rh.env(...) or an env name, got {type(value).__name__}")
