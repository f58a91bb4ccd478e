"""``fn.map`` / ``fn.starmap`` in chunks, spread over one or more workers.

Items go in chunks: one call (``/{key}/__rh_map__``, relayed by the daemon like any call, see
:mod:`runhouse.server.worker.chunks`) carries many items and its reply carries their results, so a
map of many small items pays the round trip once per chunk, not once per item. A map keeps
:data:`MAX_INFLIGHT` chunks in flight in all (at least :data:`MIN_PER_WORKER` per worker), shared
out over the workers (keys); a worker that finishes a chunk takes the next one, so a slower node
simply takes fewer. Chunks are sized so that there are about :data:`WAVES` rounds of them: small
maps (up to ``MAX_INFLIGHT`` items) send one item per chunk and so run every item concurrently, as
separate calls did; large ones amortize the trip. (More chunks in flight than that only adds
client threads contending for the GIL: 96 in flight over three nodes ran 10,000 small items at
about half the rate of 32 to one worker.)

The first item that fails stops the map: its original exception is raised here (its type kept
when the cluster can pickle it) with a note naming the item's index and arguments.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from runhouse.client.codec import rebuild_exception
from runhouse.protocol.wire import MAP, CallOptions

if TYPE_CHECKING:
    from runhouse.client.daemon_client import DaemonClient

MAX_INFLIGHT = 32  # chunks a map has in flight: as many concurrent calls as map made before chunks
MIN_PER_WORKER = 4  # but each worker gets a few, so that it always has the next chunk queued
WAVES = 4  # chunks per in-flight slot for large maps: late chunks balance a slow worker
MAX_CHUNK = 1024  # items per chunk at most: keeps a reply's size and a retry's loss bounded


def per_worker(workers: int) -> int:
    """Chunks each of ``workers`` workers has in flight at once."""
    return max(MIN_PER_WORKER, MAX_INFLIGHT // workers)


def chunk_size(items: int, workers: int) -> int:
    """Items per chunk for a map of ``items`` over ``workers`` workers."""
    return max(1, min(MAX_CHUNK, math.ceil(items / (workers * per_worker(workers) * WAVES))))


class _Run:
    """One map's shared state: the next chunk to take, the results, the first failure."""

    def __init__(self, items: Sequence[tuple[Any, ...]], size: int) -> None:
        self.items = items
        self.size = size
        self.results: list[Any] = [None] * len(items)
        self.starts = iter(range(0, len(items), size))
        self.lock = threading.Lock()
        self.failures: list[tuple[int, BaseException, str]] = []  # (item index, error, where)

    def take(self) -> int | None:
        with self.lock:
            if self.failures:
                return None
            return next(self.starts, None)

    def fail(self, index: int, error: BaseException, where: str) -> None:
        with self.lock:
            self.failures.append((index, error, where))


def run_chunks(
    client: DaemonClient,
    keys: Sequence[str],
    method: str,
    items: Sequence[tuple[Any, ...]],
    kwargs: dict[str, Any],
    options: CallOptions,
    how: str,
    label: str,
) -> list[Any]:
    """``[key.method(*args, **kwargs) for args in items]`` run on the workers holding ``keys``, in
    chunks; results in item order. ``how`` (``"map"``) and ``label`` (``"add"``) name the map and
    the function in errors: ``map item 2 of 4 failed: add(3, 3)``."""
    if not items:
        return []
    size = chunk_size(len(items), len(keys))
    chunks = math.ceil(len(items) / size)
    per_key = min(per_worker(len(keys)), math.ceil(chunks / len(keys)))
    run = _Run(items, size)

    def drive(key: str) -> None:
        while (start := run.take()) is not None:
            chunk = items[start : start + size]
            try:
                done, failed = client.call(key, MAP, (method, chunk, kwargs), {}, options)
            except BaseException as e:  # noqa: BLE001 - reported by the caller's thread
                run.fail(
                    start,
                    e,
                    f"{how} items {start}-{start + len(chunk) - 1} of {len(items)} failed (a chunk sent to {key!r})",
                )
                return
            run.results[start : start + len(done)] = done
            if failed is not None:
                index, info = failed
                meta = {"error": info, "serialization": options.serialization}
                run.fail(start + index, rebuild_exception(meta, info.get("pickled") or b""), "")
                return

    with ThreadPoolExecutor(per_key * len(keys), thread_name_prefix="rh-map") as pool:
        # slot-major, so every worker's first driver starts before any worker's second
        futures = [pool.submit(drive, key) for _ in range(per_key) for key in keys]
        try:
            wait(futures)
        except BaseException:  # Ctrl-C here: take no more chunks; those in flight finish
            run.fail(-1, KeyboardInterrupt(), "")
            raise
    if run.failures:
        index, error, where = min(run.failures, key=lambda f: f[0])
        if hasattr(error, "add_note"):
            error.add_note(
                where or f"{how} item {index} of {len(items)} failed: {label}{shown(items[index])}"
            )
        raise error
    return run.results


def shown(args: tuple[Any, ...]) -> str:
    """``(1, 2)`` for a call's arguments, cut to 200 characters."""
    text = repr(args) if len(args) != 1 else f"({args[0]!r})"
    return text if len(text) <= 200 else text[:197] + "..."
