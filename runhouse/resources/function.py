"""``rh.function``: a Python function served from a cluster.

::

    remote_sum = rh.function(np_sum).to(cluster, env=rh.env(name="np_env"))
    remote_sum([1, 2, 3])            # runs on the cluster, prints stream back
    handle = remote_sum.remote([4])  # result kept on the cluster: handle.fetch()
    remote_sum.map([[1], [2, 3]])    # in chunks over the workers (one per node), results in order: [1, 5]
    remote_sum.get_or_call("run1", True, True, [7])  # the result of run "run1", made once

A deployed function pickles as its cluster address and name, so it can be passed to another
remote function and called there.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runhouse.exceptions import ConfigError, ObjectNotFound
from runhouse.resources.calls import Options, RemoteCallable, RemoteResult, make_options, split_options
from runhouse.resources.cluster import Cluster, cluster_from_config
from runhouse.resources.code import code_spec, method_view, openapi_spec, signature_of
from runhouse.resources.env import Env, env_from_config, resolve_env
from runhouse.resources.mapping import run_chunks, shown
from runhouse.resources.module import object_endpoint
from runhouse.resources.replicas import env_on_node, place_all
from runhouse.resources.resource import Resource
from runhouse.resources.spmd import call_ranks, rank_envs


class Function(Resource):
    RESOURCE_TYPE = "function"

    def __init__(
        self,
        fn: Callable[..., Any] | None = None,
        name: str | None = None,
        system: Cluster | None = None,
        env: Env | None = None,
        signature: dict[str, Any] | None = None,
        spmd_ranks: list[str] | None = None,
    ) -> None:
        if fn is not None and not callable(fn):
            raise ConfigError(f"rh.function needs a callable, got {type(fn).__name__}")
        super().__init__(name or getattr(fn, "__name__", None))
        self._fn = fn
        self.system = system
        self.env = env
        self.signature = signature or (signature_of(fn) if fn is not None else {})
        self._node_keys: list[str] | None = None  # a map's copies, one per node (multi-node clusters)
        self.spmd_ranks = spmd_ranks  # keys of its copies, in rank order, when its env has spmd set

    def to(
        self,
        system: Cluster,
        env: Env | str | list[str] | dict[str, Any] | None = None,
        name: str | None = None,
        force_install: bool = False,
    ) -> Function:
        """Send the function to ``system`` (in ``env``'s worker) and return a stub calling it there;
        ``force_install=True`` reinstalls the env's packages even when they did not change."""
        if not isinstance(system, Cluster):
            raise ConfigError(f".to() needs a cluster (rh.cluster(...)), got {type(system).__name__}")
        if self._fn is None:
            raise ConfigError("this function has no local code to send; it was loaded by name")
        key = name or self.name
        if not key or key == "<lambda>":
            raise ConfigError("give the function a name: .to(cluster, name='my_fn')")
        env_obj = resolve_env(env if env is not None else self.env)
        if env_obj.spmd:
            return self._to_ranks(system, env_obj, key, force_install)
        return self._deploy(system, env_obj, key, force_install)

    def _deploy(self, system: Cluster, env_obj: Env, key: str, force_install: bool) -> Function:
        assert self._fn is not None
        env_config = system.ensure_env(env_obj, force_install=force_install)
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

    def _to_ranks(self, system: Cluster, env_obj: Env, key: str, force_install: bool) -> Function:
        """An SPMD env: a copy of the function per rank, ``<key>_rank_<r>`` (see :mod:`spmd`)."""
        envs = rank_envs(env_obj, system)

        def place(r: int) -> str:
            return str(self._deploy(system, envs[r], f"{key}_rank_{r}", force_install).name)

        keys = place_all(len(envs), place)
        return Function(self._fn, key, system, env_obj, self.signature, spmd_ranks=keys)

    def get_or_to(self, system: Cluster, env: Env | str | None = None, name: str | None = None) -> Function:
        """The function deployed on ``system`` under ``name`` (this one's) if there, else ``.to()``."""
        key = name or self.name
        if isinstance(system, Cluster) and key:
            try:
                found = system.get(key, remote=True)
            except ObjectNotFound:
                found = None
            if isinstance(found, Function):
                return found
        return self.to(system, env=env, name=name)

    # -- calling ----------------------------------------------------------------------------
    def _callable(self) -> RemoteCallable:
        if self.system is None or self.name is None:
            raise ConfigError("this function is not on a cluster yet: call .to(cluster) first")
        if self.spmd_ranks:
            raise ConfigError(
                f"{self.name} runs on every rank of an SPMD env: call it, {self.name}(...), to run it on "
                "all ranks; .remote(), .options(), run_async, map and get_or_call are not supported for it"
            )
        return RemoteCallable(self.system, self.name, "call", self.signature, self.system.call_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.system is None:
            if self._fn is None:
                raise ConfigError("this function has neither local code nor a cluster")
            return self._fn(*args, **kwargs)
        if self.spmd_ranks:
            return call_ranks(self.system, self.spmd_ranks, self.signature, args, kwargs)
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

    # -- many calls ---------------------------------------------------------------------------
    def map(self, *iterables: Iterable[Any], **kwargs: Any) -> list[Any]:
        """``fn.map([1, 2], [10, 20])`` is ``[fn(1, 10), fn(2, 20)]``, the calls made concurrently
        on the cluster; keyword arguments (and call options) go to every call.

        Items travel in chunks (many per request, see :mod:`runhouse.resources.mapping`); on a
        multi-node cluster they spread over a copy of the function per node. The first failing
        item stops the map and raises its own exception, with a note naming its index and
        arguments. ``remote=True`` or ``timeout=`` make one call per item instead."""
        if not iterables:
            raise ConfigError("map needs at least one iterable of arguments: fn.map([1, 2, 3])")
        return self._many(list(zip(*iterables, strict=False)), kwargs, "map")

    def starmap(self, args_lists: Iterable[Iterable[Any]], **kwargs: Any) -> list[Any]:
        """``fn.starmap([(1, 10), (2, 20)])`` is ``[fn(1, 10), fn(2, 20)]``, made concurrently."""
        return self._many([tuple(a) for a in args_lists], kwargs, "starmap")

    def _many(self, items: list[tuple[Any, ...]], kwargs: dict[str, Any], how: str) -> list[Any]:
        call = self._callable()
        kwargs, given = split_options(kwargs, self.signature)
        if given.get("run_name"):
            raise ConfigError(f"{how} makes many runs; one run_name cannot name them all")
        options = make_options(call._options, {**given, "run_async": False})
        if not items:
            return []
        assert self.system is not None and self.name is not None
        keys = self._map_keys()
        if options.remote or options.timeout is not None:  # per item: a handle or a timeout each
            return self._one_by_one(keys, items, kwargs, options, how)
        return run_chunks(self.system.client, keys, "call", items, kwargs, options.wire(), how, self.name)

    def _map_keys(self) -> list[str]:
        """The keys a map spreads over: this function's own on one node; on a multi-node cluster a
        copy per node (``<name>_node_<i>`` in env ``<env>_node_<i>``, placed with
        ``compute={"node_idx": i}``), made at the first map and reused by later ones."""
        assert self.system is not None and self.name is not None
        nodes = len(self.system.ips)
        if nodes < 2 or self._fn is None:  # one node, or no code here to copy: its own worker
            return [self.name]
        if self._node_keys is None:
            system, env = self.system, self.env or Env()

            def place(i: int) -> str:
                return str(
                    self.to(
                        system,
                        env=env_on_node(env, f"{env.env_name}_node_{i}", i),
                        name=f"{self.name}_node_{i}",
                    ).name
                )

            self._node_keys = place_all(nodes, place)
        return self._node_keys

    def _one_by_one(
        self,
        keys: list[str],
        items: list[tuple[Any, ...]],
        kwargs: dict[str, Any],
        options: Options,
        how: str,
    ) -> list[Any]:
        """Each item its own call (round robin over ``keys``): for ``remote=True`` (a handle per
        item) and ``timeout=`` (a limit per item)."""
        assert self.system is not None
        calls = [RemoteCallable(self.system, key, "call", self.signature) for key in keys]
        results: list[Any] = [None] * len(items)
        with ThreadPoolExecutor(
            min(len(items), _MAX_PARALLEL * len(keys)), thread_name_prefix=f"rh-{how}"
        ) as pool:
            futures = [
                pool.submit(calls[i % len(calls)].invoke, args, kwargs, options)
                for i, args in enumerate(items)
            ]
            for i, future in enumerate(futures):
                try:
                    results[i] = future.result()
                except BaseException as e:
                    for later in futures[i + 1 :]:
                        later.cancel()
                    if hasattr(e, "add_note"):
                        e.add_note(f"{how} item {i} of {len(items)} failed: {self.name}{shown(items[i])}")
                    raise
        return results

    def get_or_call(
        self, run_name: str, load: bool = True, local: bool = True, *args: Any, **kwargs: Any
    ) -> Any:
        """The result of the run ``run_name`` if the cluster still holds it, else run the function
        now as that run (the result is kept on the cluster under ``run_name``). ``load=False``
        always runs; ``local=False`` returns a :class:`RemoteResult` instead of the value."""
        call = self._callable()
        assert self.system is not None
        if load:
            try:
                self.system.client.resource(run_name)
            except ObjectNotFound:
                pass
            else:
                return self.system.get(run_name) if local else RemoteResult(self.system, run_name)
        kwargs, given = split_options(kwargs, self.signature)
        options = make_options(
            call._options, {**given, "run_name": run_name, "remote": True, "run_async": False}
        )
        handle = call.invoke(args, kwargs, options)
        return handle.fetch() if local else handle

    # -- addresses --------------------------------------------------------------------------
    def endpoint(self, external: bool = False) -> str | None:
        """``http://host:port/<name>``, where HTTP clients reach this function (``/<name>/call``)."""
        if self.system is None or self.name is None:
            return None
        return object_endpoint(self.system, self.name, external)

    def http_url(self, curl_command: bool = False, *args: Any, **kwargs: Any) -> str:
        """The URL to POST calls to; with ``curl_command=True`` a curl command calling it with these
        arguments (JSON; the cluster token is read from ``$RH_CLUSTER_TOKEN``)."""
        endpoint = self.endpoint()
        if endpoint is None:
            raise ConfigError("this function is not on a cluster yet: call .to(cluster) first")
        url = f"{endpoint}/call"
        if not curl_command:
            return url
        body = json.dumps({"data": {"args": list(args), "kwargs": kwargs}, "serialization": "json"})
        return (
            f"curl -X POST {shlex.quote(url)} -H 'Content-Type: application/json' "
            f'-H "Authorization: Bearer $RH_CLUSTER_TOKEN" -d {shlex.quote(body)}'
        )

    def method_signature(self, method: str = "call") -> dict[str, Any]:
        """``{"signature", "async", "gen", "doc", "annotations"}`` of the function (method ``call``)."""
        if method != "call":
            raise AttributeError(f"a function has one method, 'call'; got {method!r}")
        return method_view(self.signature)

    def openapi_spec(self, spec_name: str | None = None) -> dict[str, Any]:
        """An OpenAPI 3.0 document for calling the function over HTTP (``POST /<name>/call``)."""
        if not self.name:
            raise ConfigError("an OpenAPI spec needs the function's name: give it one with name=")
        return openapi_spec(spec_name or self.name, self.name, {"call": self.signature})

    # -- pickling -----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.system is not None:
            state["_fn"] = None  # a deployed function travels as a stub: its code stays on the cluster
        return state

    # -- metadata -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(
            {
                "system": self.system.config() if self.system is not None else None,
                "env": self.env.config() if self.env is not None else None,
                "signature": self.signature,
                **({"spmd_ranks": self.spmd_ranks} if self.spmd_ranks else {}),
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
        return cls(None, config.get("name"), system, env, config.get("signature"), config.get("spmd_ranks"))


_MAX_PARALLEL = 32  # concurrent calls per worker of a map made item by item


def function(
    fn: Callable[..., Any] | None = None,
    name: str | None = None,
    system: Cluster | None = None,
    env: Env | str | list[str] | dict[str, Any] | None = None,
) -> Function:
    """Wrap a function to send it to a cluster: ``rh.function(fn).to(cluster)``; ``env`` (an Env,
    its name, a list of requirements or a config) is kept and set up at ``.to()``.

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
    out = Function(fn, name, env=resolve_env(env) if env is not None else None)
    if system is not None:
        return out.to(system, env=env)
    return out
