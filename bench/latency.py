"""Sequential (one call in flight) latency, measured in interleaved blocks.

On a shared, noisy machine a slow minute would otherwise land on whichever variant ran then, so
each variant runs ``calls / rounds`` calls per round and the order rotates every round. Each
block starts with a few untimed calls (to re-open a kept-alive connection an idle server may have
closed, and to warm caches); every call after that is timed on its own with ``perf_counter``.

Besides the timings, each variant reports how many new TCP connections its timed calls opened:
a keep-alive client should open none, and a reconnect costs a few hundred microseconds here.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.rawhttp import CALL_BODY, RawHTTPClient, check_call
from bench.stats import summarize

WARM_PER_BLOCK = 20
Counter = Callable[[], int]


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """Seconds taken by each of ``n`` calls of ``fn``."""
    clock = time.perf_counter
    samples = [0.0] * n
    for i in range(n):
        start = clock()
        fn()
        samples[i] = clock() - start
    return samples


def interleaved(
    variants: dict[str, Callable[[], Any]], calls: int, rounds: int, opened: dict[str, Counter] | None = None
) -> dict[str, dict[str, Any]]:
    """Run every variant ``calls`` times in total, in ``rounds`` rotating blocks; summarize each.

    ``opened[name]()`` returns a running count of connections the variant's client has opened.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    new_connections = dict.fromkeys(names, 0)
    per_block = max(1, calls // rounds)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = variants[name]
            for _ in range(WARM_PER_BLOCK):
                fn()
            gc.collect()
            count = opened.get(name) if opened else None
            before = count() if count else 0
            samples[name].extend(time_calls(fn, per_block))
            new_connections[name] += (count() - before) if count else 0
    results = {name: summarize(values) for name, values in samples.items()}
    if opened:
        for name in names:
            results[name]["new_connections"] = new_connections[name] if name in opened else None
    return results


@contextlib.contextmanager
def stub_connection_counter() -> Iterator[Counter | None]:
    """Count the TCP connections our Python client opens, by wrapping its connection constructor.

    Instrumentation only (the wrapped constructor runs unchanged). Yields None if the client's
    module layout changed and there is nothing to wrap.
    """
    try:
        from runhouse.client import http11

        original = http11.Connection.__init__
    except (ImportError, AttributeError):
        yield None
        return
    count = [0]

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        original(self, *args, **kwargs)

    http11.Connection.__init__ = counting_init  # type: ignore[method-assign]
    try:
        yield lambda: count[0]
    finally:
        http11.Connection.__init__ = original  # type: ignore[method-assign]


def stub_latency(fn: Any, calls: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Our Python stub for ``add``: the default call, and explicit ``stream_logs`` on vs off.

    ``fn(1, 2)`` builds its call options on every call; ``fn.options(...)`` builds them once, so
    the on/off pair differs only in the ``stream_logs`` flag sent to the daemon.
    """
    on = fn.options(stream_logs=True)
    off = fn.options(stream_logs=False)
    variants: dict[str, Callable[[], Any]] = {
        "default (stream_logs on)": lambda: fn(1, 2),
        "options(stream_logs=True)": lambda: on(1, 2),
        "options(stream_logs=False)": lambda: off(1, 2),
    }
    for call in variants.values():
        if call() != 3:
            raise RuntimeError("the remote add(1, 2) did not return 3")
    with stub_connection_counter() as counter:
        opened = dict.fromkeys(variants, counter) if counter else None
        return interleaved(variants, calls, rounds, opened)


def streaming_body(stream_logs: bool) -> bytes:
    """The raw-HTTP call body with an explicit ``stream_logs`` field (only our daemon reads it)."""
    body = json.loads(CALL_BODY)
    body["stream_logs"] = stream_logs
    return json.dumps(body, separators=(",", ":")).encode()


def _opened_by(client: RawHTTPClient) -> Counter:
    return lambda: client.connections_opened


def raw_latency(clients: dict[str, RawHTTPClient], calls: int, rounds: int) -> dict[str, dict[str, Any]]:
    """The same JSON request, from the same raw keep-alive client, to each server."""
    for client in clients.values():
        check_call(client)
    opened = {name: _opened_by(client) for name, client in clients.items()}
    return interleaved({name: client.call for name, client in clients.items()}, calls, rounds, opened)
