"""``runhouse start`` to the first successful remote call, each time in a fresh ``RH_HOME``.

The clock starts when the ``runhouse start`` CLI subprocess is launched and stops when
``f(1, 2)`` has returned 3 in this (already running, runhouse already imported) Python process:
CLI start-up, daemon start, default worker start, deploy by import path and the first call.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import runhouse as rh
from bench._funcs import add
from bench.servers import Daemon, free_port
from bench.stats import median


def one_start(base: Path) -> dict[str, float]:
    """Time one cold start; the daemon is stopped again before returning."""
    home = Path(tempfile.mkdtemp(prefix="rh-start-", dir=base))
    port = free_port()
    began = time.perf_counter()
    daemon = Daemon.start(home, port)
    cli_done = time.perf_counter()
    try:
        fn = rh.function(add).to(daemon.cluster())
        deployed = time.perf_counter()
        if fn(1, 2) != 3:
            raise RuntimeError("first call did not return 3")
        first = time.perf_counter()
    finally:
        daemon.stop()
    return {
        "total_s": first - began,
        "cli_s": cli_done - began,
        "deploy_s": deployed - cli_done,
        "first_call_s": first - deployed,
    }


def start_to_first_call(base: Path, reps: int) -> dict[str, Any]:
    """``reps`` cold starts; the median of each phase and of the total."""
    samples = [one_start(base) for _ in range(reps)]
    summary: dict[str, Any] = {f"median_{k}": round(median([s[k] for s in samples]), 4) for k in samples[0]}
    summary["samples_total_s"] = [round(s["total_s"], 4) for s in samples]
    summary["reps"] = reps
    return summary
