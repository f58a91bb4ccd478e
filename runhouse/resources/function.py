"""``rh.function``: a Python function served from a cluster.

::

    remote_sum = rh.function(np_sum).to(cluster, env=rh.env(name="np_env"))
    remote_sum([1, 2, 3])            # runs on the cluster, prints stream back
    handle = remote_sum.remote([4])  # result kept on the cluster: handle.fetch()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runhouse.exceptions import ConfigError
from runhouse.resources.calls import Options, RemoteCallable, RemoteResult
from runhouse.resources.cluster import Cluster, cluster_from_config
from runhouse.resources.code import code_spec, signature_of
from runhouse.resources.env import Env, env_from_config, resolve_env
from runhouse.resources.resource import Resource


class Function(Resource):
    RESOURCE_TYPE = "function"

    def __init__(
        self,
        fn: Callable[..., Any] | None = None,
        name: str | None = None,
        system: Cluster | None = None,
        env: Env | None = None,
        signature: dict[str, Any] | None = None,
    ) -> None:
        if fn is not None and not callable(fn):
            raise ConfigError(f"rh.function needs a callable, got {type(fn).__name__}")
        super().__init__(name or getattr(fn, "__name__", None))
        self._fn = fn
        self.system = system
        self.env = env
        self.signature = signature or (signature_of(fn) if fn is not None else {})

    def to(self, system: Cluster, env: Env | str | None = None, name: str | None = None) -> Function:
        """Send the function to ``system`` (in ``env``'s worker) and return a stub calling it there."""
        if not isinstance(system, Cluster):
            raise ConfigError(f".to() needs a cluster (rh.cluster(...)), got {type(system).__name__}")
        if self._fn is None:
            raise ConfigError("this function has no local code to send; it was loaded by name")
        key = name or self.name
        if not key or key == "<lambda>":
            raise ConfigError("give the function a name: .to(cluster, name='my_fn')")
        env_obj = resolve_env(env)
        env_config = system.ensure_env(env_obj)
        spec, payload = code_spec(self._fn)
        spec = system.code_root(spec)
        deployed = Function(self._fn, key, system, env_obj, self.signature)
        system.client.deploy(
            {
                "key": key,
                "kind": "function",
                "env": env_obj.env_name,
                "env_config": env_config,
                "spec": spec,
                "serialization": "pickle",
                "config": deployed.config(),
            },
            payload,
        )
        return deployed

    # -- calling ----------------------------------------------------------------------------
    def _callable(self) -> RemoteCallable:
        if self.system is None or self.name is None:
            raise ConfigError("this function is not on a cluster yet: call .to(cluster) first")
        return RemoteCallable(self.system, self.name, "call", self.signature, self.system.call_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.system is None:
            if self._fn is None:
                raise ConfigError("this function has neither local code nor a cluster")
            return self._fn(*args, **kwargs)
        return self._callable()(*args, **kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> RemoteResult:
        """Run remotely and keep the result there: ``handle = fn.remote(x); handle.fetch()``."""
        return self._callable().remote(*args, **kwargs)

    def options(self, **given: Any) -> RemoteCallable:
        """Call with options: ``fn.options(stream_logs=False, run_name="r1")(x)``."""
        return self._callable().options(**given)

    def run_async(self, *args: Any, **kwargs: Any) -> Any:
        """An awaitable for the call, whatever kind the function is."""
        return self._callable().invoke(args, kwargs, Options(run_async=True))

    # -- metadata -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(
            {
                "system": self.system.config() if self.system is not None else None,
                "env": self.env.config() if self.env is not None else None,
                "signature": self.signature,
            }
        )
        return cfg

    @classmethod
    def from_deployed(cls, system: Cluster, key: str, config: dict[str, Any], env: Env) -> Function:
        """A stub for a function another client deployed to ``system`` under ``key``."""
        return cls(None, key, system, env, config.get("signature") or {})

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Function:
        system = cluster_from_config(config["system"]) if config.get("system") else None
        env = env_from_config(config.get("env"))
        return cls(None, config.get("name"), system, env, config.get("signature"))


def function(
    fn: Callable[..., Any] | None = None,
    name: str | None = None,
    system: Cluster | None = None,
    env: Env | str | None = None,
) -> Function:
    """Wrap a function to send it to a cluster: ``rh.function(fn).to(cluster)``.

    With only ``name`` and ``system``, returns a stub for a function already on that cluster.
    """
    if fn is None:
        if name is not None and system is None:
            return Function.load(name)
        if name is None or system is None:
            raise ConfigError(
                "rh.function needs a function, or name= of a saved one (and system= of its cluster)"
            )
        stub = system.get(name, remote=True)
        if not isinstance(stub, Function):
            raise ConfigError(f"{name!r} on {system.name!r} is not a function")
        return stub
    out = Function(fn, name)
    if system is not None:
        return out.to(system, env=env)
    return out
