"""SPMD functions: one worker per node (or per GPU) running the same function, as ranks.

::

    train_env = rh.env(name="train", reqs=["torch"], spmd="node")   # or spmd="gpu"
    train = rh.function(train_fn).to(cluster, env=train_env)
    results = train(epochs=3)   # train_fn ran on every rank; its results, in rank order

``.to()`` makes one env per rank, ``<env>_rank_<r>`` (on a multi-node cluster placed with
``compute={"node_idx": node}``, plus ``"GPU": 1`` per rank for ``spmd="gpu"``), each with the
variables a ``torch.distributed``-style program expects: ``MASTER_ADDR`` (the head host, rank 0's
node), ``MASTER_PORT`` (a port free on the head when ``.to()`` ran), ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` (the rank's index on its node); ranks that exist already keep their port, so more
functions can be sent to the same ranks without restarting them. The function is deployed to every rank as
``<name>_rank_<r>``; a call goes to all ranks at once and returns when all have answered. The
first rank that fails raises its own exception, with a note naming the rank.

``spmd="gpu"`` needs GPUs that Ray reports (a multi-node cluster); where it reports none, ``.to()``
refuses it. On a one-node cluster ``spmd="node"`` is a single rank.
"""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from runhouse.exceptions import ConfigError
from runhouse.resources.calls import RemoteCallable, make_options, split_options
from runhouse.resources.env import Env

if TYPE_CHECKING:
    from runhouse.resources.cluster import Cluster

_FREE_PORT = "python3 -c \"import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])\""


class Rank(NamedTuple):
    rank: int
    node: int  # index of its host in the cluster's host list
    local_rank: int


def ranks(system: Cluster, kind: str) -> list[Rank]:
    """The ranks of an SPMD env of ``kind`` (``"node"`` or ``"gpu"``) on ``system``."""
    hosts = system.ips
    if kind == "node":
        return [Rank(i, i, 0) for i in range(len(hosts))]
    gpus = _gpus_per_host(system)
    if not any(gpus):
        where = ", ".join(f"{h}: {n:g}" for h, n in zip(hosts, gpus, strict=True)) or "no Ray nodes"
        raise ConfigError(
            f"spmd='gpu' starts a rank per GPU, but Ray reports no GPUs on {system.name!r} ({where}); "
            "use spmd='node' for a rank per node"
        )
    out: list[Rank] = []
    for node, count in enumerate(gpus):
        out += [Rank(len(out), node, local) for local in range(int(count))]
    return out


def _gpus_per_host(system: Cluster) -> list[float]:
    """GPUs Ray reports per host of ``system`` (in host order); zeros where Ray is not running."""
    nodes = system.status().get("nodes") or []
    by_address = {n.get("address"): float(n.get("gpus") or 0) for n in nodes if n.get("alive", True)}
    return [by_address.get(host, 0.0) for host in system.ips]


def master(system: Cluster, rank0_env: str, world_size: int) -> tuple[str, int]:
    """``MASTER_ADDR`` and ``MASTER_PORT``: the head host, and the port the ranks of this env
    already use (so a second function sent to them does not restart them with new variables),
    else a port free on the head now."""
    address = "127.0.0.1" if system.is_local() else system.head
    for env in system.envs():
        if env.get("name") == rank0_env:
            known = (env.get("config") or {}).get("env_vars") or {}
            port = str(known.get("MASTER_PORT", ""))
            same = known.get("MASTER_ADDR") == address and known.get("WORLD_SIZE") == str(world_size)
            if same and port.isdigit():
                return address, int(port)
    code, out, err = system.run(_FREE_PORT)[0]
    if code != 0 or not out.strip().isdigit():
        raise ConfigError(
            f"could not find a free port on {system.head} for MASTER_PORT: {err.strip() or out}"
        )
    return address, int(out.strip())


def rank_envs(env: Env, system: Cluster) -> list[Env]:
    """One env per rank of ``env`` (an env with ``spmd`` set) on ``system``, with its variables."""
    kind = cast(str, env.spmd)
    layout = ranks(system, kind)
    address, port = master(system, f"{env.env_name}_rank_0", len(layout))
    multi_node = len(system.ips) > 1
    out = []
    for r in layout:
        config = env.config()
        config.pop("spmd", None)
        config["name"] = f"{env.env_name}_rank_{r.rank}"
        config["env_vars"] = {
            **env.resolved_env_vars(),
            "MASTER_ADDR": address,
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(len(layout)),
            "RANK": str(r.rank),
            "LOCAL_RANK": str(r.local_rank),
        }
        if multi_node:
            gpu = {"GPU": 1} if kind == "gpu" else {}
            config["compute"] = {**(env.compute or {}), **gpu, "node_idx": r.node}
        elif kind == "gpu":
            config["env_vars"]["CUDA_VISIBLE_DEVICES"] = str(r.local_rank)
        out.append(cast(Env, Env.from_config(config)))
    return out


def call_ranks(
    system: Cluster, keys: list[str], signature: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[Any]:
    """Call the function on every rank at once (``keys`` in rank order); results in rank order.
    Call options (``stream_logs``, ``timeout``, ...) among ``kwargs`` apply to every rank. The first
    rank to fail raises at once (the others may be waiting for it and never end)."""
    kwargs, given = split_options(kwargs, signature)
    options = make_options(system.call_options, {**given, "run_async": False})
    if options.remote or options.run_name:
        raise ConfigError("an SPMD call returns every rank's result: remote= and run_name= do not apply")
    calls = [RemoteCallable(system, key, "call", signature) for key in keys]
    generator = bool(signature.get("generator"))

    def one(call: RemoteCallable) -> Any:
        result = call.invoke(args, kwargs, options)
        return list(result) if generator else result

    pool = ThreadPoolExecutor(len(calls), thread_name_prefix="rh-spmd")
    try:
        futures = [pool.submit(one, call) for call in calls]
        wait(futures, return_when=FIRST_EXCEPTION)
        for rank, future in enumerate(futures):
            error = future.exception() if future.done() else None
            if error is not None:
                if hasattr(error, "add_note"):
                    error.add_note(f"SPMD rank {rank} of {len(keys)} failed ({keys[rank]})")
                raise error
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False)
