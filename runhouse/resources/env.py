"""``rh.env``: the description of a worker process (its name and environment variables).

Each env is one worker process on the cluster; objects sent with the same env share it.
"""

from __future__ import annotations

from typing import Any

from runhouse.exceptions import ConfigError
from runhouse.resources.resource import Resource

DEFAULT_ENV_NAME = "default_env"


class Env(Resource):
    """A worker process's environment. ``rh.env(env_vars={"K": "v"}, name="w")``."""

    RESOURCE_TYPE = "env"

    def __init__(
        self,
        name: str | None = None,
        env_vars: dict[str, str] | None = None,
        reqs: list[str] | None = None,
        setup_cmds: list[str] | None = None,
    ) -> None:
        super().__init__(name)
        self.env_vars = {str(k): str(v) for k, v in (env_vars or {}).items()}
        self.reqs = list(reqs or [])
        self.setup_cmds = list(setup_cmds or [])
        if self.reqs or self.setup_cmds:
            raise ConfigError(
                "installing reqs and running setup_cmds in an env is not supported yet; "
                "install packages in the daemon's Python environment and pass only env_vars and name"
            )

    @property
    def env_name(self) -> str:
        return self.name or DEFAULT_ENV_NAME

    def wire_config(self) -> dict[str, Any]:
        """What the daemon needs to start this env's worker."""
        return {"name": self.env_name, "env_vars": self.env_vars}

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "env_vars": self.env_vars,
            "reqs": self.reqs,
            "setup_cmds": self.setup_cmds,
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Env:
        return cls(
            name=config.get("name"),
            env_vars=config.get("env_vars"),
            reqs=config.get("reqs"),
            setup_cmds=config.get("setup_cmds"),
        )


def env(
    reqs: list[str] | None = None,
    env_vars: dict[str, str] | None = None,
    name: str | None = None,
    setup_cmds: list[str] | None = None,
) -> Env:
    """Describe a worker environment: ``rh.env(env_vars={"OMP_NUM_THREADS": "2"}, name="np_env")``."""
    return Env(name=name, env_vars=env_vars, reqs=reqs, setup_cmds=setup_cmds)


def resolve_env(value: Env | str | None) -> Env:
    if value is None:
        return Env()
    if isinstance(value, str):
        return Env(name=value)
    if isinstance(value, Env):
        return value
    raise ConfigError(f"env must be an rh.env(...) or an env name, got {type(value).__name__}")
