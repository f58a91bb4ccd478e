"""``rh.module`` and ``rh.Module``: classes whose instances live on a cluster.

::

    RemoteCounter = rh.module(Counter).to(cluster, env=env)
    c = RemoteCounter(start=5, name="counter")   # __init__ runs on the cluster
    c.incr(); c.value; c.value = 10; c.fetch()   # methods and attributes of the live object

    class Model(rh.Module): ...
    m = Model(size=3).to(cluster, name="model")  # the same, from a local instance's init args

A stub keeps its own state in ``_rh_*`` attributes so user names never collide with it.
"""

from __future__ import annotations

from typing import Any

from runhouse.exceptions import ConfigError
from runhouse.protocol.serialization import serialize_parts
from runhouse.protocol.wire import GETATTR, SETATTR, CallOptions
from runhouse.resources.calls import RemoteCallable
from runhouse.resources.cluster import Cluster, cluster_from_config
from runhouse.resources.code import class_signature, code_spec
from runhouse.resources.env import Env, env_from_config, resolve_env
from runhouse.resources.resource import Resource


def _deploy_class(cls: type, system: Cluster, env: Env) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if not isinstance(system, Cluster):
        raise ConfigError(f".to() needs a cluster (rh.cluster(...)), got {type(system).__name__}")
    env_config = system.ensure_env(env)
    spec, payload = code_spec(cls)
    spec = system.code_root(spec)
    signature = class_signature(cls)
    class_key = cls.__name__
    system.client.deploy(
        {
            "key": class_key,
            "kind": "class",
            "env": env.env_name,
            "env_config": env_config,
            "spec": spec,
            "serialization": "pickle",
            "config": {"resource_type": "module_class", "signature": signature},
        },
        payload,
    )
    return class_key, spec, signature


def _construct(
    system: Cluster,
    env: Env,
    class_key: str,
    spec: dict[str, Any],
    signature: dict[str, Any],
    key: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> RemoteModule:
    stub = RemoteModule(system, key, signature, env)
    system.client.deploy(
        {
            "key": key,
            "kind": "module",
            "env": env.env_name,
            "env_config": {"name": env.env_name, "ref": True},
            "spec": {"kind": "instance", "class_key": class_key, "class": spec},
            "serialization": "pickle",
            "config": stub.config(),
        },
        serialize_parts({"args": list(args), "kwargs": kwargs}, "pickle"),
    )
    return stub


def _quiet(system: Cluster) -> CallOptions:
    """Options for attribute reads and writes: no output streaming, the cluster's serialization."""
    return _QUIET[system.call_options.serialization]


_QUIET = {ser: CallOptions(serialization=ser, stream_logs=False) for ser in ("pickle", "json")}


class RemoteClass:
    """A class deployed to a cluster. Call it to build a named remote instance."""

    def __init__(self, cls: type, system: Cluster, env: Env) -> None:
        self._rh_cls = cls
        self._rh_system = system
        self._rh_env = env
        self._rh_class_key, self._rh_spec, self._rh_signature = _deploy_class(cls, system, env)

    def __call__(self, *args: Any, name: str | None = None, **kwargs: Any) -> RemoteModule:
        if "name" in self._rh_signature["init"]["params"] and name is not None:
            kwargs["name"] = name  # the class takes a `name` itself: it gets it too
        key = name or self._rh_cls.__name__.lower()
        return _construct(
            self._rh_system,
            self._rh_env,
            self._rh_class_key,
            self._rh_spec,
            self._rh_signature,
            key,
            args,
            kwargs,
        )

    def __getattr__(self, name: str) -> Any:
        methods = self.__dict__.get("_rh_signature", {}).get("methods", {})
        if name in methods:  # class and static methods, called on the deployed class
            system = self._rh_system
            return RemoteCallable(system, self._rh_class_key, name, methods[name], system.call_options)
        raise AttributeError(f"{self._rh_cls.__name__} has no class or static method {name!r}")


class ModuleFactory:
    """What ``rh.module(cls)`` returns: call ``.to(cluster)`` to deploy the class."""

    def __init__(self, cls: type) -> None:
        if not isinstance(cls, type):
            raise ConfigError(f"rh.module needs a class, got {type(cls).__name__}")
        self.cls = cls

    def to(self, system: Cluster, env: Env | str | None = None) -> RemoteClass:
        return RemoteClass(self.cls, system, resolve_env(env))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cls(*args, **kwargs)  # a plain local instance


class RemoteModule(Resource):
    """A stub for a live object on a cluster: method calls and attribute access go to it."""

    RESOURCE_TYPE = "module"

    def __init__(self, system: Cluster, key: str, signature: dict[str, Any], env: Env | None = None) -> None:
        object.__setattr__(self, "_rh_system", system)
        object.__setattr__(self, "_rh_key", key)
        object.__setattr__(self, "_rh_signature", signature)
        object.__setattr__(self, "_rh_env", env)
        object.__setattr__(self, "name", key)
        object.__setattr__(self, "_rh_rns_address", None)

    @property
    def rns_address(self) -> str | None:  # type: ignore[override]  # kept apart from the object's own attributes
        return object.__getattribute__(self, "_rh_rns_address")

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            methods = object.__getattribute__(self, "_rh_signature").get("methods", {})
            if name in methods:
                system = object.__getattribute__(self, "_rh_system")
                return RemoteCallable(
                    system,
                    object.__getattribute__(self, "_rh_key"),
                    name,
                    methods[name],
                    system.call_options,
                )
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        system = self._rh_system
        return system.client.call(self._rh_key, GETATTR, (name,), {}, _quiet(system))

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_rh_") or name == "name":
            object.__setattr__(self, name, value)
            return
        if name == "rns_address":
            object.__setattr__(self, "_rh_rns_address", value)
            return
        system = self._rh_system
        system.client.call(self._rh_key, SETATTR, (name, value), {}, _quiet(system))

    def fetch(self) -> Any:
        """A local copy of the live object (unpickled here)."""
        return self._rh_system.get(self._rh_key)

    def config(self) -> dict[str, Any]:
        cfg = {
            "resource_type": self.RESOURCE_TYPE,
            "name": self._rh_key,
            "system": self._rh_system.config(),
            "signature": self._rh_signature,
            "env": self._rh_env.config() if self._rh_env is not None else None,
        }
        if self._rh_rns_address:
            cfg["rns_address"] = self._rh_rns_address
        return cfg

    @classmethod
    def from_deployed(cls, system: Cluster, key: str, config: dict[str, Any], env: Env) -> RemoteModule:
        """A stub for an object another client deployed to ``system`` under ``key``."""
        return cls(system, key, config.get("signature") or {}, env)

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> RemoteModule:
        env = env_from_config(config.get("env"))
        return cls(cluster_from_config(config["system"]), config["name"], config.get("signature") or {}, env)

    def __repr__(self) -> str:
        return f"<RemoteModule {self._rh_key!r} on {self._rh_system.name!r}>"


class Module:
    """Base class for classes meant to live on a cluster.

    ``Model(*args).to(cluster, name="m")`` runs ``Model.__init__(*args)`` on the cluster and
    returns a :class:`RemoteModule` stub. Locally the instance is an ordinary object.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        self._rh_init_args = (args, kwargs)  # type: ignore[attr-defined]
        return self

    def to(self, system: Cluster, env: Env | str | None = None, name: str | None = None) -> RemoteModule:
        args, kwargs = getattr(self, "_rh_init_args", ((), {}))
        remote_cls = RemoteClass(type(self), system, resolve_env(env))
        return remote_cls(*args, name=name or type(self).__name__.lower(), **kwargs)


def module(cls: type | None = None, name: str | None = None, system: Cluster | None = None) -> Any:
    """``rh.module(MyClass)`` to deploy a class, or ``rh.module(name=..., system=cluster)``
    for a stub of an object already living on that cluster."""
    if cls is None:
        if name is not None and system is None:
            return RemoteModule.load(name)
        if name is None or system is None:
            raise ConfigError(
                "rh.module needs a class, or name= of a saved module (or of a live one with system=)"
            )
        return system.get(name, remote=True)
    return ModuleFactory(cls)
