"""``rh.module`` and ``rh.Module``: classes whose instances live on a cluster.

::

    RemoteCounter = rh.module(Counter).to(cluster, env=env)
    c = RemoteCounter(start=5, name="counter")   # __init__ runs on the cluster
    c.incr(); c.value; c.value = 10; c.fetch()   # methods and attributes of the live object

    class Model(rh.Module): ...
    m = Model(size=3).to(cluster, name="model")  # the same, from a local instance's init args

    c.remote.value; c.local.system; c.fetch("value")  # explicit remote / local attribute access
    replicas = c.replicate(num_replicas=2)            # copies in worker processes of their own (one per
    replicas.incr()                                   # node in turn); calls balanced over them
    c.openapi_spec()                                  # how other languages call it over HTTP

Class and instance stubs are both ``rh.Module``s. A stub keeps its own state in ``_rh_*``
attributes so user names never collide with it; its own API (``system``, ``env``, ``name``,
``fetch``, ``replicate``, ...) is never forwarded to the live object (use ``.remote.<name>``).
Stubs pickle (plain pickle and cloudpickle) as a cluster address plus a key, so they can be
passed to remote functions and used there.
"""

from __future__ import annotations

import copy
from typing import Any

import cloudpickle

from runhouse.exceptions import ConfigError, ObjectNotFound
from runhouse.protocol.serialization import serialize_parts
from runhouse.protocol.wire import GETATTR, SETATTR, CallOptions
from runhouse.resources.calls import Options, RemoteCallable
from runhouse.resources.cluster import Cluster, cluster_from_config
from runhouse.resources.code import class_signature, code_spec, method_view, openapi_spec
from runhouse.resources.env import Env, env_from_config, resolve_env
from runhouse.resources.replicas import ReplicaPool, env_on_node, place_all
from runhouse.resources.resource import Resource

# Names of the stub's own API: never forwarded to the live object, even when its class has a
# method of the same name (reach that one with ``stub.remote.<name>``).
_STUB_API = frozenset(
    {
        "name", "system", "env", "to", "get_or_to", "rename", "refresh", "signature",
        "method_signature", "openapi_spec", "replicate", "remote", "local", "fetch",
        "fetch_async", "set_async", "endpoint", "config", "save", "rns_address",
    }
)  # fmt: skip


def _check_cluster(system: Any) -> Cluster:
    if not isinstance(system, Cluster):
        raise ConfigError(f".to() needs a cluster (rh.cluster(...)), got {type(system).__name__}")
    return system


def _deploy_class(
    cls: type, system: Cluster, env: Env, key: str | None = None, force_install: bool = False
) -> RemoteClass:
    """Send ``cls`` to ``env``'s worker on ``system`` under ``key`` (the class name by default)."""
    _check_cluster(system)
    if env.spmd:
        raise ConfigError(
            f"env {env.env_name!r} has spmd={env.spmd!r}: SPMD ranks run functions "
            "(rh.function(fn).to(cluster, env=...)); send the class to an env without spmd"
        )
    env_config = system.ensure_env(env, force_install=force_install)
    spec, payload = code_spec(cls)
    spec = system.code_root(spec)
    stub = RemoteClass(system, key or cls.__name__, class_signature(cls), env, spec=spec, local_cls=cls)
    system.client.deploy(
        {
            "key": stub.name,
            "kind": "class",
            "env": env.env_name,
            "env_config": env_config,
            "spec": spec,
            "serialization": "pickle",
            "config": stub.config(),
        },
        payload,
    )
    return stub


def _quiet(system: Cluster) -> CallOptions:
    """Options for attribute reads and writes: no output streaming, the cluster's serialization."""
    return _QUIET[system.call_options.serialization]


_QUIET = {ser: CallOptions(serialization=ser, stream_logs=False) for ser in ("pickle", "json")}


class Module:
    """Base class for classes meant to live on a cluster, and the type of every module stub.

    ``Model(*args).to(cluster, name="m")`` runs ``Model.__init__(*args)`` on the cluster and
    returns a :class:`RemoteModule` stub. Locally the instance is an ordinary object.
    """

    system: Cluster | None = None  # where it lives: None for a local instance
    env: Env | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        self._rh_init_args = (args, kwargs)  # type: ignore[attr-defined]
        return self

    def _rh_user_class(self) -> type:
        return getattr(type(self), "_rh_user_cls", type(self))

    def to(
        self,
        system: Cluster,
        env: Env | str | None = None,
        name: str | None = None,
        force_install: bool = False,
    ) -> Any:
        """Build this object on ``system`` from its init arguments; returns the stub."""
        args, kwargs = getattr(self, "_rh_init_args", ((), {}))
        cls = self._rh_user_class()
        remote_cls = _deploy_class(cls, system, resolve_env(env), force_install=force_install)
        return remote_cls(*args, name=name or cls.__name__.lower(), **kwargs)

    def get_or_to(self, system: Cluster, env: Env | str | None = None, name: str | None = None) -> Any:
        """The object named ``name`` on ``system`` if it is there, else ``self.to(system, env, name)``."""
        name = name or self._rh_user_class().__name__.lower()
        try:
            return _check_cluster(system).get(name, remote=True)
        except ObjectNotFound:
            return self.to(system, env=env, name=name)

    def _rh_methods(self) -> dict[str, Any]:
        return dict(class_signature(self._rh_user_class())["methods"])

    def signature(self, rich: bool = False) -> dict[str, Any]:
        """Public methods: ``{name: None}``, or ``{name: method_signature(name)}`` with ``rich=True``."""
        return {m: (method_view(sig) if rich else None) for m, sig in self._rh_methods().items()}

    def method_signature(self, method: str) -> dict[str, Any]:
        """``{"signature", "async", "gen", "doc", "annotations"}`` of one public method."""
        methods = self._rh_methods()
        if method not in methods:
            raise AttributeError(f"{method!r} is not a public method; methods: {', '.join(sorted(methods))}")
        return method_view(methods[method])

    def openapi_spec(self, spec_name: str | None = None) -> dict[str, Any]:
        """An OpenAPI 3.0 document of the methods, as they are called over HTTP."""
        key = spec_name or getattr(self, "name", None) or self._rh_user_class().__name__.lower()
        return openapi_spec(spec_name or str(key), str(key), self._rh_methods())


class _RemoteAttributes:
    """``stub.remote``: attribute reads and writes that always go to the live object."""

    __slots__ = ("_stub",)

    def __init__(self, stub: _Stub) -> None:
        object.__setattr__(self, "_stub", stub)

    def __getattr__(self, name: str) -> Any:
        return self._stub._rh_getattr(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._stub._rh_setattr(name, value)

    def __call__(self) -> Any:
        return self._stub.fetch()


class _LocalAttributes:
    """``stub.local``: attributes of the stub itself, never sent anywhere."""

    __slots__ = ("_stub",)

    def __init__(self, stub: _Stub) -> None:
        object.__setattr__(self, "_stub", stub)

    def __getattr__(self, name: str) -> Any:
        return object.__getattribute__(self._stub, name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self._stub, name, value)


class _Stub(Module, Resource):
    """What class and instance stubs share: where the object lives and what it looks like."""

    _rh_system: Cluster
    _rh_key: str
    _rh_signature: dict[str, Any]
    _rh_env: Env | None
    _rh_spec: dict[str, Any] | None
    _rh_rns_address: str | None

    def __new__(klass, *args: Any, **kwargs: Any) -> Any:  # noqa: N804
        return object.__new__(klass)  # a stub's own arguments are not init arguments to record

    def __init__(
        self,
        system: Cluster,
        key: str,
        signature: dict[str, Any],
        env: Env | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        object.__setattr__(self, "_rh_system", system)
        object.__setattr__(self, "_rh_key", key)
        object.__setattr__(self, "_rh_signature", signature)
        object.__setattr__(self, "_rh_env", env)
        object.__setattr__(self, "_rh_spec", spec)  # the class's code spec, when known
        object.__setattr__(self, "name", key)
        object.__setattr__(self, "_rh_rns_address", None)

    @property
    def system(self) -> Cluster:  # type: ignore[override]
        return object.__getattribute__(self, "_rh_system")

    @property
    def env(self) -> Env:  # type: ignore[override]
        env = object.__getattribute__(self, "_rh_env")
        return env if env is not None else resolve_env(None)

    @property
    def rns_address(self) -> str | None:  # type: ignore[override]  # kept apart from the object's own attributes
        return object.__getattribute__(self, "_rh_rns_address")

    @property
    def remote(self) -> Any:
        """``stub.remote.size`` reads the live object's attribute; ``stub.remote.size = 3`` sets it."""
        return _RemoteAttributes(self)

    @property
    def local(self) -> Any:
        """``stub.local.name`` reads the stub's own attribute, never the live object's."""
        return _LocalAttributes(self)

    def _rh_methods(self) -> dict[str, Any]:
        return dict(self._rh_signature.get("methods", {}))

    def _rh_getattr(self, name: str) -> Any:
        system = self._rh_system
        return system.client.call(self._rh_key, GETATTR, (name,), {}, _quiet(system))

    def _rh_setattr(self, name: str, value: Any) -> None:
        system = self._rh_system
        system.client.call(self._rh_key, SETATTR, (name, value), {}, _quiet(system))

    def _rh_attr_call(self, method: str, args: tuple[Any, ...], options: Options) -> Any:
        system = self._rh_system
        options = Options(**{**options.__dict__, "serialization": system.call_options.serialization})
        return RemoteCallable(system, self._rh_key, method, {}, options).invoke(args, {}, options)

    # -- the original's attribute helpers -------------------------------------------------------
    def fetch(self, item: str | None = None) -> Any:
        """A local copy of the live object (unpickled here), or of one of its attributes."""
        if item is not None:
            return self._rh_getattr(item)
        return self._rh_system.get(self._rh_key)

    async def fetch_async(self, key: str, remote: bool = False, stream_logs: bool = False) -> Any:
        """``await stub.fetch_async("attr")``; ``remote=True`` keeps the value on the cluster
        and returns a :class:`RemoteResult`."""
        options = Options(run_async=True, stream_logs=stream_logs, remote=remote)
        return await self._rh_attr_call(GETATTR, (key,), options)

    async def set_async(self, key: str, value: Any) -> None:
        """``await stub.set_async("attr", value)``."""
        await self._rh_attr_call(SETATTR, (key, value), Options(run_async=True, stream_logs=False))

    # -- naming and location ---------------------------------------------------------------------
    def endpoint(self, external: bool = False) -> str | None:
        """``http(s)://host:port/<name>``; with ``external=True`` None unless reachable from elsewhere."""
        return object_endpoint(self._rh_system, self._rh_key, external)

    def rename(self, name: str) -> None:
        """Rename the object on the cluster (and this stub)."""
        if name == self._rh_key:
            return
        self._rh_system.rename(self._rh_key, name)
        object.__setattr__(self, "_rh_key", name)
        object.__setattr__(self, "name", name)

    def refresh(self) -> Any:
        """A fresh stub for the object under this name, as the cluster now describes it."""
        return self._rh_system.get(self._rh_key, remote=True)

    def get_or_to(self, system: Cluster, env: Env | str | None = None, name: str | None = None) -> Any:
        if system is self._rh_system and (name is None or name == self._rh_key):
            return self
        return super().get_or_to(system, env=env, name=name or self._rh_key)

    def openapi_spec(self, spec_name: str | None = None) -> dict[str, Any]:
        return openapi_spec(spec_name or self._rh_key, self._rh_key, self._rh_methods())

    def replicate(
        self,
        num_replicas: int = 1,
        names: list[str] | None = None,
        envs: list[Env | str] | None = None,
        parallel: bool = False,
    ) -> ReplicaPool:
        """Copies of this object on the same cluster, each in an env (a worker process) of its own:
        ``names`` default to ``<name>_replica_<i>``, ``envs`` to copies of this env named
        ``<env>_replica_<i>``; on a multi-node cluster those envs go to the nodes in turn
        (``compute={"node_idx": i % nodes}``). Returns a :class:`ReplicaPool`: the replicas' stubs
        in order (a list) that also balances calls over them (``pool.method(x)``, ``pool.map``)."""
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ConfigError(f"num_replicas must be a whole number of at least 1, got {num_replicas!r}")
        for given, what in ((names, "names"), (envs, "envs")):
            if given is not None and len(given) != num_replicas:
                raise ConfigError(
                    f"{what} has {len(given)} entries; it needs one per replica ({num_replicas})"
                )

        def make(i: int) -> Any:
            name = names[i] if names is not None else f"{self._rh_key}_replica_{i}"
            env = resolve_env(envs[i]) if envs is not None else _replica_env(self.env, i, nodes)
            return self._rh_copy(self._rh_system, env, name)

        nodes = len(self._rh_system.ips)
        if parallel and num_replicas > 1:
            return ReplicaPool(place_all(num_replicas, make))
        return ReplicaPool(make(i) for i in range(num_replicas))

    def _rh_copy(self, system: Cluster, env: Env, name: str) -> Any:
        raise NotImplementedError

    def to(
        self,
        system: Cluster,
        env: Env | str | None = None,
        name: str | None = None,
        force_install: bool = False,
    ) -> Any:
        """Already there: the same stub (renamed with ``name``). Elsewhere: a copy made there."""
        if force_install:
            env_obj = resolve_env(env) if env is not None else self.env
            _check_cluster(system).ensure_env(env_obj, force_install=True)
        same_env = env is None or resolve_env(env).env_name == self.env.env_name
        if system is self._rh_system and same_env:
            if name:
                self.rename(name)
            return self
        return self._rh_copy(_check_cluster(system), resolve_env(env), name or self._rh_key)

    def _rh_fields(self) -> dict[str, Any]:
        return {
            "system": self._rh_system,
            "key": self._rh_key,
            "signature": self._rh_signature,
            "env": object.__getattribute__(self, "_rh_env"),
            "spec": self._rh_spec,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # a stub travels as where the object is and what it looks like: never local code or clients
        return (_rebuild_stub, (type(self), self._rh_fields(), self._rh_rns_address))

    def config(self) -> dict[str, Any]:
        cfg = {
            "resource_type": self.RESOURCE_TYPE,
            "name": self._rh_key,
            "system": self._rh_system.config(),
            "signature": self._rh_signature,
            "env": self._rh_env.config() if self._rh_env is not None else None,
            "class_spec": self._rh_spec,
        }
        if self._rh_rns_address:
            cfg["rns_address"] = self._rh_rns_address
        return cfg

    @classmethod
    def from_deployed(cls, system: Cluster, key: str, config: dict[str, Any], env: Env) -> Any:
        """A stub for an object another client deployed to ``system`` under ``key``."""
        return cls(system, key, config.get("signature") or {}, env, spec=config.get("class_spec"))

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Any:
        env = env_from_config(config.get("env"))
        system = cluster_from_config(config["system"])
        return cls(system, config["name"], config.get("signature") or {}, env, spec=config.get("class_spec"))


def _rebuild_stub(kind: type[_Stub], fields: dict[str, Any], rns_address: str | None) -> _Stub:
    stub = kind(**fields)
    object.__setattr__(stub, "_rh_rns_address", rns_address)
    return stub


def _replica_env(env: Env, i: int, nodes: int = 1) -> Env:
    """A copy of ``env`` under the name ``<env>_replica_<i>``: its own worker process; with more
    than one node, placed on node ``i % nodes``."""
    if nodes > 1:
        return env_on_node(env, f"{env.env_name}_replica_{i}", i % nodes)
    replica = copy.copy(env)
    replica.name = f"{env.env_name}_replica_{i}"
    return replica


def object_endpoint(system: Cluster, key: str, external: bool = False) -> str | None:
    """The HTTP address of the object ``key`` on ``system``: ``<cluster endpoint>/<key>``."""
    own = getattr(system, "endpoint", None)
    base = own(external=external) if callable(own) else None
    if base is None and not callable(own):
        endpoint = system.client.endpoint
        if external and (endpoint.host in ("127.0.0.1", "localhost", "::1") and not system.is_local()):
            return None  # reached through an SSH tunnel: the address means nothing elsewhere
        base = endpoint.url
    return f"{base}/{key}" if base else None


class RemoteClass(_Stub):
    """A class deployed to a cluster. Call it to build a named remote instance; its class and
    static methods run there; ``RemoteCls.method(instance, ...)`` calls an instance method."""

    RESOURCE_TYPE = "module_class"

    def __init__(
        self,
        system: Cluster,
        key: str,
        signature: dict[str, Any],
        env: Env | None = None,
        spec: dict[str, Any] | None = None,
        local_cls: type | None = None,
    ) -> None:
        super().__init__(system, key, signature, env, spec)
        self._rh_cls = local_cls

    def __call__(self, *args: Any, name: str | None = None, **kwargs: Any) -> RemoteModule:
        if "name" in self._rh_signature.get("init", {}).get("params", ()) and name is not None:
            kwargs["name"] = name  # the class takes a `name` itself: it gets it too
        key = name or str(self._rh_signature.get("class_name", self._rh_key)).lower()
        return self._rh_construct(self._rh_system, self.env, key, args, kwargs)

    def _rh_construct(
        self, system: Cluster, env: Env, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> RemoteModule:
        stub = RemoteModule(system, key, self._rh_signature, env, spec=self._rh_spec)
        object.__setattr__(stub, "_rh_class_key", self._rh_key)
        system.client.deploy(
            {
                "key": key,
                "kind": "module",
                "env": env.env_name,
                "env_config": {"name": env.env_name, "ref": True},
                "spec": {"kind": "instance", "class_key": self._rh_key, "class": self._rh_spec or {}},
                "serialization": "pickle",
                "config": stub.config(),
            },
            serialize_parts({"args": list(args), "kwargs": kwargs}, "pickle"),
        )
        return stub

    def _rh_copy(self, system: Cluster, env: Env, name: str) -> RemoteClass:
        cls = self._rh_cls
        if cls is None:
            raise ConfigError(
                f"the class {self._rh_key!r} was not deployed from this process; "
                "deploy it again with rh.module(cls).to(...) to copy it"
            )
        return _deploy_class(cls, system, env, key=name)

    def __getattr__(self, name: str) -> Any:
        methods = self.__dict__.get("_rh_signature", {}).get("methods", {})
        if name in methods:
            system = self._rh_system
            call = RemoteCallable(system, self._rh_key, name, methods[name], system.call_options)
            if methods[name].get("kind") == "instance":
                return _InstanceMethod(self._rh_key, name, call)
            return call  # class and static methods, called on the deployed class
        raise AttributeError(f"{self._rh_key} has no class or static method {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_stub, (type(self), self._rh_fields(), self._rh_rns_address))

    def __repr__(self) -> str:
        return f"<RemoteClass {self._rh_key!r} on {self._rh_system.name!r}>"


class _InstanceMethod:
    """``RemoteCls.incr``: an instance method taken from the class, so its first argument is the
    instance: a stub of a live object (the call goes to it) or a local instance (sent along)."""

    def __init__(self, class_key: str, name: str, call: RemoteCallable) -> None:
        self._class_key = class_key
        self._name = name
        self._call = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not args:
            raise TypeError(
                f"{self._class_key}.{self._name} is an instance method: pass the instance first "
                f"({self._class_key}.{self._name}(obj, ...)), or call obj.{self._name}(...)"
            )
        instance, rest = args[0], args[1:]
        if isinstance(instance, RemoteModule):
            return getattr(instance, self._name)(*rest, **kwargs)
        return self._call(instance, *rest, **kwargs)


class ModuleFactory:
    """What ``rh.module(cls)`` returns: ``.to(cluster)`` deploys the class; calling it makes a
    local instance that has ``.to(cluster)`` too."""

    def __init__(self, cls: type, name: str | None = None, env: Env | str | None = None) -> None:
        if not isinstance(cls, type):
            raise ConfigError(f"rh.module needs a class, got {type(cls).__name__}")
        self.cls = cls
        self.name = name or cls.__name__
        self.env = env

    def to(
        self,
        system: Cluster,
        env: Env | str | None = None,
        name: str | None = None,
        force_install: bool = False,
    ) -> RemoteClass:
        env_obj = resolve_env(env or self.env)
        return _deploy_class(self.cls, system, env_obj, key=name or self.name, force_install=force_install)

    def get_or_to(self, system: Cluster, env: Env | str | None = None, name: str | None = None) -> Any:
        """The class already deployed on ``system`` under ``name`` (the class name), else deploy it."""
        key = name or self.name
        try:
            return _check_cluster(system).get(key, remote=True)
        except ObjectNotFound:
            return self.to(system, env=env, name=key)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A local instance (built here) with ``.to(cluster)``, which builds it there instead."""
        return _local_class(self.cls)(*args, **kwargs)


_LOCAL_CLASSES: dict[type, type] = {}


def _local_class(cls: type) -> type:
    """``cls`` with :class:`Module` mixed in (made once per class)."""
    if issubclass(cls, Module):
        return cls
    if cls not in _LOCAL_CLASSES:
        _LOCAL_CLASSES[cls] = type(
            cls.__name__, (cls, Module), {"_rh_user_cls": cls, "__module__": cls.__module__}
        )
    return _LOCAL_CLASSES[cls]


class RemoteModule(_Stub):
    """A stub for a live object on a cluster: method calls and attribute access go to it."""

    RESOURCE_TYPE = "module"

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            methods = object.__getattribute__(self, "_rh_signature").get("methods", {})
            if name in methods and name not in _STUB_API:
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
        return self._rh_getattr(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_rh_") or name == "name":
            object.__setattr__(self, name, value)
            return
        if name == "rns_address":
            object.__setattr__(self, "_rh_rns_address", value)
            return
        self._rh_setattr(name, value)

    def _rh_copy(self, system: Cluster, env: Env, name: str) -> RemoteModule:
        """A copy of the live object (its state, fetched here) under ``name`` in ``env`` on ``system``."""
        spec = self._rh_spec
        if spec and not spec.get("by_value") and spec.get("module"):
            # the class is imported in the new worker (from its root) before the object is unpickled
            class_stub = RemoteClass(system, f"{name}__class", self._rh_signature, env, spec=spec)
            system.client.deploy(
                {
                    "key": class_stub.name,
                    "kind": "class",
                    "env": env.env_name,
                    "env_config": system.ensure_env(env),
                    "spec": system.code_root(spec),
                    "serialization": "pickle",
                    "config": class_stub.config(),
                },
                b"",
            )
            env_config: dict[str, Any] = {"name": env.env_name, "ref": True}
        else:
            env_config = system.ensure_env(env)
        state = self.fetch()
        stub = RemoteModule(system, name, self._rh_signature, env, spec=spec)
        object_spec, payload = {"by_value": True, "name": name}, _cloudpickle(state)
        system.client.deploy(
            {
                "key": name,
                "kind": "module",
                "env": env.env_name,
                "env_config": env_config,
                "spec": object_spec,
                "serialization": "pickle",
                "config": stub.config(),
            },
            payload,
        )
        if spec and not spec.get("by_value") and spec.get("module"):
            system.delete(f"{name}__class")  # its module stays imported in the worker
        return stub

    def __repr__(self) -> str:
        return f"<RemoteModule {self._rh_key!r} on {self._rh_system.name!r}>"


def _cloudpickle(obj: Any) -> bytes:
    return bytes(cloudpickle.dumps(obj, protocol=5))


def module(
    cls: type | None = None,
    name: str | None = None,
    system: Cluster | None = None,
    env: Env | str | None = None,
) -> Any:
    """``rh.module(MyClass)`` to deploy a class (``.to(cluster)``) or make a local instance of it
    (``rh.module(MyClass)(*args)``), or ``rh.module(name=..., system=cluster)`` for a stub of an
    object already living on that cluster."""
    if cls is None:
        if env is not None:
            raise ConfigError("env= goes with a class: rh.module(MyClass, env=...)")
        if name is not None and system is None:
            return RemoteModule.load(name)
        if name is None or system is None:
            raise ConfigError(
                "rh.module needs a class, or name= of a saved module (or of a live one with system=)"
            )
        return system.get(name, remote=True)
    factory = ModuleFactory(cls, name=name, env=env)
    if system is not None:
        return factory.to(system)
    return factory
