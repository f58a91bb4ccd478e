"""What ``module.replicate(n)`` returns: the replicas' stubs, as a list, that also balance calls.

::

    pool = model.replicate(num_replicas=3)   # on a multi-node cluster: one per node, round robin
    pool[0].predict(x)                        # a list of stubs, as before: this replica
    pool.predict(x)                           # the replica with the fewest calls in flight from here
    pool.map("predict", batches)              # many items in chunks over all replicas, in order

Balancing is done here, in the caller's process: each call goes to the replica with the fewest
calls this process has in flight to it, ties taken in turn (so sequential calls go round robin).
Names that a list has itself (``count``, ``index``, ``copy``, ``sort``, ...) stay the list's:
call such a method with ``pool.call("count", ...)``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from runhouse.exceptions import ConfigError
from runhouse.resources.calls import make_options, split_options
from runhouse.resources.env import Env
from runhouse.resources.mapping import run_chunks

T = TypeVar("T")


def place_all(count: int, place: Callable[[int], T]) -> list[T]:
    """``[place(i) for i in range(count)]``, the first alone and the rest at once: the first
    placement on a cluster starts the daemon's Ray driver, and concurrent first placements raced
    that start (Ray's "called ray.init twice")."""
    if count < 1:
        return []
    first = place(0)
    if count == 1:
        return [first]
    with ThreadPoolExecutor(min(count - 1, 16), thread_name_prefix="rh-place") as pool:
        return [first, *pool.map(place, range(1, count))]


def env_on_node(env: Env, name: str, node: int) -> Env:
    """A copy of ``env`` named ``name`` whose worker goes on node ``node`` of a multi-node cluster
    (``compute`` plus ``node_idx``), built through its config so the placement rules apply."""
    config = env.config()
    config.update(name=name, compute={**(env.compute or {}), "node_idx": node})
    return cast(Env, Env.from_config(config))


class ReplicaPool(list[Any]):
    """Stubs of replicas (a list) with calls balanced over them (see the module docstring)."""

    def __init__(self, stubs: Iterable[Any]) -> None:
        super().__init__(stubs)
        self._busy = [0] * len(self)
        self._turn = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Balanced(self, name)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``pool.call("predict", x)`` is ``pool.predict(x)``, for names a list has itself."""
        return _Balanced(self, method)(*args, **kwargs)

    def map(self, method: str, *iterables: Iterable[Any], **kwargs: Any) -> list[Any]:
        """``[replica.method(*args, **kwargs) for args in zip(*iterables)]``, the items sent in
        chunks to all replicas at once (see :mod:`runhouse.resources.mapping`); in order."""
        if not iterables:
            raise ConfigError("map needs at least one iterable of arguments: pool.map('method', [1, 2])")
        return self._chunks(method, list(zip(*iterables, strict=False)), kwargs, "map")

    def starmap(self, method: str, args_lists: Iterable[Iterable[Any]], **kwargs: Any) -> list[Any]:
        """``[replica.method(*args, **kwargs) for args in args_lists]``, in chunks over all replicas."""
        return self._chunks(method, [tuple(a) for a in args_lists], kwargs, "starmap")

    def _chunks(
        self, method: str, items: list[tuple[Any, ...]], kwargs: dict[str, Any], how: str
    ) -> list[Any]:
        if not self:
            raise ConfigError("this pool has no replicas")
        first = self[0]
        system = first.system
        signature = first._rh_signature.get("methods", {}).get(method)
        if signature is None:
            raise AttributeError(f"{first.name} has no method {method!r} to map")
        kwargs, given = split_options(kwargs, signature)
        if given.get("run_name") or given.get("remote") or given.get("timeout") is not None:
            raise ConfigError(f"pool.{how} takes no run_name, remote or timeout; call replicas one by one")
        options = make_options(system.call_options, {**given, "run_async": False})
        keys = [stub.name for stub in self]
        return run_chunks(system.client, keys, method, items, kwargs, options.wire(), how, f"{method}")

    def _take(self) -> int:
        """The replica for the next call: fewest in flight from here, ties in turn."""
        with self._lock:
            count = len(self)
            order = [(self._turn + k) % count for k in range(count)]
            chosen = min(order, key=lambda i: self._busy[i])
            self._busy[chosen] += 1
            self._turn = (chosen + 1) % count
            return chosen

    def _give_back(self, index: int) -> None:
        with self._lock:
            self._busy[index] -= 1

    def __reduce__(self) -> tuple[Any, ...]:  # the counters are this process's: not sent along
        return (ReplicaPool, (list(self),))

    def __repr__(self) -> str:
        return f"ReplicaPool({list.__repr__(self)})"


class _Balanced:
    """``pool.method``: each call goes to one replica, chosen when it is made."""

    def __init__(self, pool: ReplicaPool, name: str) -> None:
        self._pool = pool
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._pool:
            raise ConfigError("this pool has no replicas")
        index = self._pool._take()
        try:
            result = getattr(self._pool[index], self._name)(*args, **kwargs)
        except BaseException:
            self._pool._give_back(index)
            raise
        if inspect.isawaitable(result):  # async: busy until it is awaited to the end
            return self._awaiting(result, index)
        self._pool._give_back(index)
        return result

    async def _awaiting(self, awaitable: Any, index: int) -> Any:
        try:
            return await awaitable
        finally:
            self._pool._give_back(index)
