"""Resident memory of the daemon and its default worker, idle and across many calls.

RSS is read with psutil from the daemon's pid (its pid file) and the worker pids (its children).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench.servers import Daemon

MB = 2**20


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def snapshot(daemon: Daemon) -> dict[str, float]:
    """RSS (MiB) of the daemon, of its workers together, and the total."""
    daemon_mb = rss_mb(daemon.pid)
    worker_mb = sum(rss_mb(pid) for pid in daemon.worker_pids())
    return {
        "daemon_mb": round(daemon_mb, 2),
        "worker_mb": round(worker_mb, 2),
        "total_mb": round(daemon_mb + worker_mb, 2),
    }


def idle(daemon: Daemon, settle_s: float = 1.0) -> dict[str, Any]:
    """RSS of a freshly started daemon once its default worker is up and nothing is running."""
    worker_pid = daemon.wait_for_worker()
    time.sleep(settle_s)
    return {**snapshot(daemon), "daemon_pid": daemon.pid, "worker_pid": worker_pid}


def growth(
    daemon: Daemon, call: Callable[[], Any], calls: int, warm: int = 2000, checkpoints: int = 10
) -> dict[str, Any]:
    """RSS before and after ``calls`` sequential calls (after ``warm`` untimed ones), with a trace."""
    for _ in range(warm):
        call()
    gc.collect()
    time.sleep(0.5)
    before = snapshot(daemon)
    trace = [before["total_mb"]]
    step = max(1, calls // checkpoints)
    began = time.perf_counter()
    done = 0
    while done < calls:
        n = min(step, calls - done)
        for _ in range(n):
            call()
        done += n
        trace.append(snapshot(daemon)["total_mb"])
    elapsed = time.perf_counter() - began
    time.sleep(0.5)
    after = snapshot(daemon)
    delta = {k: round(after[k] - before[k], 2) for k in before}
    return {
        "calls": calls,
        "seconds": round(elapsed, 1),
        "before": before,
        "after": after,
        "delta": delta,
        "bytes_per_call": round(delta["total_mb"] * MB / calls, 2),
        "trace_total_mb": trace,
    }
