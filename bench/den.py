#!/usr/bin/env python
"""Den benchmark: ``python bench/den.py [--ops N]``.

Starts Den with ``runhouse den start`` twice, on SQLite (a file in a temporary data dir) and on a
throwaway PostgreSQL server (``tests/denserver.py``: fsync off, as in the tests), adds a user with
``runhouse den user add``, and then, from this one process over one kept-alive httpx connection:

* saves: ``PUT /v1/resources/{user}/bench-{i % 10}`` with a ~1 KB config, so each save appends a
  version to one of ten names (the row is locked, the version row inserted, the transaction
  committed);
* loads: ``GET /v1/resources/{user}/bench-{i % 10}`` (token check plus a read with access check).

Each kind runs 20 untimed warm-up requests, then ``--ops`` timed ones, one after another. Prints a
Markdown table of sequential ops/s and p50/p99 latency per backend; stops what it started.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
from denserver import DenServer, postgres_url, start_den  # noqa: E402

from bench.stats import summarize  # noqa: E402

WARMUP = 20
NAMES = 10


def _timed(n: int, op: Callable[[int], httpx.Response]) -> list[float]:
    for i in range(WARMUP):
        op(i).raise_for_status()
    samples = []
    for i in range(n):
        began = time.perf_counter()
        reply = op(i)
        samples.append(time.perf_counter() - began)
        reply.raise_for_status()
    return samples


def measure(den: DenServer, ops: int) -> dict[str, dict[str, Any]]:
    token = den.add_user("bench")
    config = {"resource_type": "function", "code": "x" * 1000, "env": {"reqs": ["numpy"]}}
    with den.client(token) as http:
        saves = _timed(
            ops, lambda i: http.put(f"/v1/resources/bench/bench-{i % NAMES}", json={"config": config})
        )
        loads = _timed(ops, lambda i: http.get(f"/v1/resources/bench/bench-{i % NAMES}"))
    return {"save": summarize(saves), "load": summarize(loads)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=500, help="timed requests per kind (default %(default)s)")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="rh-den-bench-") as tmp:
        for backend in ("sqlite", "postgresql"):
            data_dir = Path(tmp) / backend
            den = start_den(data_dir, postgres_url() if backend == "postgresql" else None, {"RH_HOME": tmp})
            try:
                results[backend] = measure(den, args.ops)
            finally:
                den.stop()
    print(
        f"| backend | saves/s | save p50 ms | save p99 ms | loads/s | load p50 ms | load p99 ms |  ({args.ops} each)"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for backend, r in results.items():
        s, g = r["save"], r["load"]
        print(
            f"| {backend} | {s['calls_per_s']} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
            f"| {g['calls_per_s']} | {g['p50_ms']:.2f} | {g['p99_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
