"""Round trip of a 100 MB numpy array through ``identity`` in the default worker.

MB/s = 100 MB (10^8 bytes) / round-trip seconds: the array goes client -> daemon -> worker and
back (through same-host shared memory, or with ``shm=False`` through the sockets). One untimed call with the full array comes first (it imports numpy in the worker and
faults in buffers); then ``reps`` timed calls, reporting the median.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import runhouse as rh
from bench._funcs import identity
from bench.stats import median

SIZE_BYTES = 100_000_000


def round_trip(cluster: Any, reps: int, size_bytes: int = SIZE_BYTES, shm: bool = True) -> dict[str, Any]:
    """With ``shm=False`` the client does not use same-host shared memory: the array crosses the
    HTTP connection and the worker's channel both ways, as it does to a daemon on another host."""
    fn = rh.function(identity).to(cluster)
    client = cluster.client
    saved = client._shm_state
    if not shm:
        client._shm_state = None  # "no shared memory with this daemon" (DaemonClient._shm)
    try:
        return _timed(fn, reps, size_bytes)
    finally:
        client._shm_state = saved


def _timed(fn: Any, reps: int, size_bytes: int) -> dict[str, Any]:
    array = np.random.default_rng(0).random(size_bytes // 8)
    began = time.perf_counter()
    back = fn(array)
    cold_s = time.perf_counter() - began
    if not (isinstance(back, np.ndarray) and np.array_equal(back, array)):
        raise RuntimeError("the array did not come back unchanged")
    del back
    seconds = []
    for _ in range(reps):
        began = time.perf_counter()
        fn(array)
        seconds.append(time.perf_counter() - began)
    mb = size_bytes / 1e6
    return {
        "size_mb": mb,
        "reps": reps,
        "median_s": round(median(seconds), 4),
        "median_mb_per_s": round(mb / median(seconds), 1),
        "best_mb_per_s": round(mb / min(seconds), 1),
        "cold_mb_per_s": round(mb / cold_s, 1),
        "samples_s": [round(s, 4) for s in seconds],
    }
