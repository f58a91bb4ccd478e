"""``rh.env`` and ``rh.conda_env``: the Python environment of a worker process.

::

    env = rh.env(reqs=["numpy", "./my_pkg", "-r requirements.txt"], env_vars={"OMP_NUM_THREADS": "2"},
                 setup_cmds=["mkdir -p /tmp/data"], name="np_env")
    fn = rh.function(np_sum).to(cluster, env=env)   # built on first use, then reused

Each env is one worker process on the cluster; objects sent with the same env share it. By default
the worker uses the daemon's Python environment (packages are installed there); ``venv=True``
gives the env a virtual environment of its own, so envs can hold conflicting versions of a package.

On a multi-node cluster, ``compute=`` places the env's worker with Ray: ``rh.env(name="trainer",
compute={"GPU": 1})`` goes to a node with a free GPU, ``compute={"node_idx": 1}`` to the cluster's
second host; a request no node can hold fails ``.to()`` naming what is missing.
"""

from __future__ import annotations

import sys
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
    spmd = {"spmd": config["spmd"]} if config.get("spmd") else {}  # SPMD ranks: resources/spmd.py
    return {**{key: config.get(key) for key in keys}, **spmd}


COMPUTE_KEYS = ("CPU", "GPU", "memory", "node_idx")  # any other key is a custom Ray resource


def check_compute(compute: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``compute=``: resource names to amounts (``CPU``, ``GPU``, ``memory`` in bytes, a
    custom resource's name) and ``node_idx``, the index of a host in the cluster's host list.

    Where the worker may go is decided on the cluster, by Ray; a cluster of one machine refuses any
    ``compute=`` when the env is set up (nothing would place it)."""
    if compute is None:
        return {}
    if not isinstance(compute, dict):
        raise ConfigError(
            'compute must map resource names to amounts, e.g. {"CPU": 2, "GPU": 1, "node_idx": 1}'
        )
    for key, value in compute.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"compute keys are resource names (strings), got {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"compute[{key!r}] must be a number of at least 0, got {value!r}")
        if key == "node_idx" and not isinstance(value, int):
            raise ConfigError(
                f"compute['node_idx'] is the index of a host in the cluster's host list, got {value!r}"
            )
    return dict(compute)


class Env(Resource):
    """A worker's environment: requirements, environment variables, setup commands, working dir.

    Attributes may change after construction (``env.reqs += ["scipy"]``, ``env.env_vars = ".env"``,
    ``env.working_dir = "./"``): what is installed is computed from them at the next ``.to()``.
    """

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
        system: Cluster | None = None,
        spmd: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        if spmd not in (None, "node", "gpu"):  # SPMD ranks (see resources/spmd.py)
            raise ConfigError(
                f"spmd must be 'node' (a rank per node) or 'gpu' (a rank per GPU), got {spmd!r}"
            )
        self.spmd = spmd
        self.working_dir = working_dir
        self.reqs = reqs  # normalized by the setter
        self.env_vars = env_vars
        self.setup_cmds = list(setup_cmds or [])
        if not all(isinstance(c, str) for c in self.setup_cmds):
            raise ConfigError("setup_cmds must be a list of shell command strings")
        self.compute = check_compute(compute)
        if self.compute and not name:
            raise ConfigError(
                f"compute={self.compute} places the env's own worker: give the env a name (the cluster's "
                "default env always runs on the head)"
            )
        if venv is True and not name:
            raise ConfigError("venv=True needs the env to have a name (it names the virtual environment)")
        self.venv = (name if venv is True else venv) or None
        self.system = system  # the cluster this env was set up on by .to(), if any

    # -- attributes the user may change; read again at every .to() ------------------------------
    @property
    def reqs(self) -> list[str]:
        """The requirements, with the working dir last (as the original listed it)."""
        extra = [self.working_dir] if self.working_dir and self.working_dir not in self._reqs else []
        return [*self._reqs, *extra]

    @reqs.setter
    def reqs(self, value: list[str | Package] | str | Package | None) -> None:
        if isinstance(value, str | Package):
            value = [value]
        reqs = [r.to_requirement() if isinstance(r, Package) else r for r in value or []]
        parse_reqs([r for r in reqs if r != self.working_dir])  # fails now on a bad entry, not at .to()
        self._reqs = [r for r in reqs if r != self.working_dir]

    @property
    def _parsed_reqs(self) -> list[dict[str, str]]:
        return parse_reqs(self._reqs)

    @property
    def env_vars(self) -> dict[str, str] | str:
        """A dict, or the path of a ``.env`` file (read when the env is set up)."""
        return self._env_vars

    @env_vars.setter
    def env_vars(self, value: dict[str, Any] | str | None) -> None:
        resolved = _env_vars(value)  # checks a .env file exists
        self._env_vars: dict[str, str] | str = value if isinstance(value, str) else resolved

    def resolved_env_vars(self) -> dict[str, str]:
        """The env vars as they are now (a ``.env`` file read again)."""
        return _env_vars(self._env_vars)

    @property
    def env_name(self) -> str:
        return self.name or DEFAULT_ENV_NAME

    @property
    def is_reference(self) -> bool:
        """True when this env only names an env (nothing to build)."""
        return not (
            self._reqs
            or self._env_vars
            or self.setup_cmds
            or self.working_dir
            or self.venv
            or self._conda()
            or self.compute
        )

    def _conda(self) -> dict[str, Any] | None:
        return None

    # -- on a cluster ---------------------------------------------------------------------------
    def to(self, system: Cluster, force_install: bool = False, path: str | None = None) -> Env:
        """Set this env up on ``system`` (packages, env vars, setup commands, working dir) and
        return a copy bound to it: ``env.to(cluster).run(["python -V"])``.

        ``force_install=True`` installs again and reruns setup commands even if nothing changed."""
        from runhouse.resources.cluster import Cluster

        if not isinstance(system, Cluster):
            raise ConfigError(f"env.to() needs a cluster (rh.cluster(...)), got {type(system).__name__}")
        if path is not None:
            raise ConfigError(
                "env.to(path=...) is not supported: the cluster keeps synced folders in its own sync "
                "folder and the env's working dir is set to that copy; leave path unset"
            )
        system.ensure_env(self, force_install=force_install)
        bound = cast(Env, Env.from_config(self.config()))
        bound.system = system
        return bound

    def run(self, commands: str | list[str], **kwargs: Any) -> Any:
        """Run shell commands on the env's cluster in its context (env vars, Python, working dir)."""
        if self.system is None:
            raise ConfigError("this env is not on a cluster yet: call env.to(cluster) first")
        return self.system.run(commands, env=self, **kwargs)

    def wire_config(self, system: Cluster | None = None, force_install: bool = False) -> dict[str, Any]:
        """What the daemon needs to build this env; local folders are synced to ``system`` first."""
        if self.is_reference and not force_install:
            return {"name": self.env_name, "ref": True}
        reqs = []
        for req in self._parsed_reqs:
            if req["kind"] == "local":
                if system is None:
                    raise ConfigError("a local requirement needs a cluster to sync to")
                req = {"kind": "local", "spec": system.sync(req["spec"])}
            reqs.append(req)
        working_dir = system.sync(self.working_dir) if (self.working_dir and system is not None) else None
        config: dict[str, Any] = {
            "name": self.env_name,
            "reqs": reqs,
            "env_vars": self.resolved_env_vars(),
            "setup_cmds": self.setup_cmds,
            "working_dir": working_dir,
            "venv": self.venv,
            "conda": self._conda(),
            "compute": self.compute or None,
            "resource": self.config(),
        }
        if force_install:
            config["force"] = True
        return config

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "reqs": self._reqs,
            "env_vars": self.resolved_env_vars(),
            "setup_cmds": self.setup_cmds,
            "working_dir": self.working_dir,
            "compute": self.compute,
            "venv": self.venv,
            **({"spmd": self.spmd} if self.spmd else {}),  # SPMD ranks (see resources/spmd.py)
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Env:
        return cls(**_env_kwargs(config), venv=config.get("venv") or False)


class CondaEnv(Env):
    """An env whose worker runs in a conda environment (``conda`` or ``micromamba`` on the cluster)."""

    RESOURCE_TYPE = "conda_env"

    def __init__(
        self, conda_env: dict[str, Any] | str | None = None, name: str | None = None, **kwargs: Any
    ) -> None:
        spec: dict[str, Any] | None
        if conda_env is None:  # a new conda env named after the env, with this machine's Python
            if not name:
                raise ConfigError("rh.conda_env() needs name= or conda_env= (a spec, a yaml path or a name)")
            spec = {
                "name": name,
                "dependencies": [f"python={sys.version_info[0]}.{sys.version_info[1]}", "pip"],
            }
            conda_name = name
        elif isinstance(conda_env, dict):
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
        if kwargs.get("venv"):
            raise ConfigError("a conda env has its own Python: venv= does not apply")
        kwargs.pop("venv", None)
        super().__init__(name=name or conda_name, **kwargs)
        self.conda_name = conda_name
        self.conda_spec = spec

    @property
    def conda_yaml(self) -> dict[str, Any] | None:
        """The conda environment spec (as in an ``environment.yml``); None for an env that already
        exists on the cluster and is only named."""
        return self.conda_spec

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
    reqs: list[str | Package] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
    name: str | None = None,
    setup_cmds: list[str] | None = None,
    env_vars: dict[str, Any] | str | None = None,
    working_dir: str | None = None,
    compute: dict[str, Any] | None = None,
    venv: bool | str = False,
    **kwargs: Any,
) -> Env:
    """Describe a worker environment: ``rh.env(reqs=["numpy"], env_vars={"K": "v"}, name="np_env")``.

    ``reqs`` take PyPI specs, local package folders (``"./pkg"``), ``"pip:..."``, ``"conda:..."``,
    ``"-r requirements.txt"`` and ``rh.package(...)`` objects; ``env_vars`` a dict or a ``.env`` file;
    ``venv=True`` an isolated virtual environment; ``conda_env=`` (a spec, an ``environment.yml``
    path or an existing conda env's name) makes a :class:`CondaEnv`. Unnamed envs mean the
    cluster's default env. With only ``name`` of a saved env, that env is loaded.
    """
    fields: dict[str, Any] = {
        "reqs": reqs,
        "setup_cmds": setup_cmds,
        "env_vars": env_vars,
        "working_dir": working_dir,
        "compute": compute,
    }
    if conda_env is not None:
        return CondaEnv(conda_env, name=name, venv=venv, **fields, **kwargs)
    if name and not any(fields.values()) and not venv and not kwargs:
        saved = _saved_env(name)
        if saved is not None:
            return saved
    return Env(name=name, venv=venv, **fields, **kwargs)


def conda_env(
    conda_env: dict[str, Any] | str | None = None, name: str | None = None, **kwargs: Any
) -> CondaEnv:
    """A conda-backed env: ``rh.conda_env({"name": "ml", "dependencies": ["python=3.11"]})``,
    the path of an ``environment.yml``, the name of a conda env that exists on the cluster, or
    (with only ``name=`` and ``reqs=``) a new conda env of that name with this machine's Python."""
    return CondaEnv(conda_env, name=name, **kwargs)


def _saved_env(name: str) -> Env | None:
    """The env saved under ``name`` (``~/x``, ``/owner/x``), or None when none is."""
    if not name.startswith(("~/", "/", "@/")):
        return None  # a plain name refers to an env on the cluster; never a network lookup
    from runhouse.exceptions import ObjectNotFound

    try:
        return Env.load(name)
    except ObjectNotFound:
        return None


def env_from_config(config: dict[str, Any] | str | None) -> Env | None:
    """The env a nested config describes, of its own kind (a conda env stays one), or None.

    A condensed config names the env instead (see ``Resource.config(condensed=True)``)."""
    if isinstance(config, str):
        return resolve_env(config)
    return cast(Env, Env.from_config(config)) if config else None


def resolve_env(value: Env | str | list[Any] | dict[str, Any] | None) -> Env:
    """The env an ``env=`` argument means: an Env; the name of an env on the cluster (or of a saved
    one, ``~/x``); a list of requirements (the default env with those installed); or a dict (an
    env's config, or ``rh.env`` keyword arguments)."""
    if value is None:
        return Env()
    if isinstance(value, Env):
        return value
    if isinstance(value, str):
        return _saved_env(value) or Env(name=value)
    if isinstance(value, list):
        return Env(reqs=value)
    if isinstance(value, dict):
        if value.get("resource_type") in ("env", "conda_env"):
            return cast(Env, Env.from_config(value))
        return env(**value)
    raise ConfigError(
        "env must be an rh.env(...), an env name, a list of requirements or a dict, "
        f"got {type(value).__name__}"
    )
