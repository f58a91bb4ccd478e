"""Sequential (one call in flight) latency, measured in interleaved blocks.

On a shared, noisy machine a slow minute would otherwise land on whichever variant ran then, so
each variant runs ``calls / rounds`` calls per round and the order rotates every round. Each
block starts with a few untimed calls (to re-open a kept-alive connection an idle server may have
closed, and to warm caches); every call after that is timed on its own with ``perf_counter``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from bench.rawhttp import RawHTTPClient, check_call
from bench.stats import summarize

WARM_PER_BLOCK = 20


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """Seconds taken by each of ``n`` calls of ``fn``."""
    clock = time.perf_counter
    samples = [0.0] * n
    for i in range(n):
        start = clock()
        fn()
        samples[i] = clock() - start
    return samples


def interleaved(variants: dict[str, Callable[[], Any]], calls: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Run every variant ``calls`` times in total, in ``rounds`` rotating blocks; summarize each."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    per_block = max(1, calls // rounds)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = variants[name]
            for _ in range(WARM_PER_BLOCK):
                fn()
            gc.collect()
            samples[name].extend(time_calls(fn, per_block))
    return {name: summarize(values) for name, values in samples.items()}


def stub_latency(fn: Any, calls: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Our Python stub for ``add``: the default call, and explicit ``stream_logs`` on vs off.

    ``fn(1, 2)`` builds its call options on every call; ``fn.options(...)`` builds them once, so
    the on/off pair differs only in the ``stream_logs`` flag sent to the daemon.
    """
    on = fn.options(stream_logs=True)
    off = fn.options(stream_logs=False)
    for call in (lambda: fn(1, 2), lambda: on(1, 2), lambda: off(1, 2)):
        if call() != 3:
            raise RuntimeError("the remote add(1, 2) did not return 3")
    return interleaved({
        "default (stream_logs on)": lambda: fn(1, 2),
        "options(stream_logs=True)": lambda: on(1, 2),
        "options(stream_logs=False)": lambda: off(1, 2),
    }, calls, rounds)


def raw_latency(clients: dict[str, RawHTTPClient], calls: int, rounds: int) -> dict[str, dict[str, Any]]:
    """The same JSON request, from the same raw keep-alive client, to each server."""
    for client in clients.values():
        check_call(client)
    results = interleaved({name: client.call for name, client in clients.items()}, calls, rounds)
    for name, client in clients.items():
        results[name]["connections_opened"] = client.connections_opened
    return results
