#!/usr/bin/env python
"""``fn.map`` over many small items on three nodes vs Ray tasks on the same cluster, in one run
(issue 12): ``python bench/map.py [--items 10000] [--reps 3]`` (as root).

Brings up a three-host multi-node cluster on the SSH test hosts (``tests/compute/sshlab.py``:
network namespaces with their own sshd and home, Ray installed from a package index served to
them; one Ray CPU per node, as tests/compute/test_ray_cluster.py, since all three share this
machine's cores) and measures, each as the median of ``--reps`` runs:

* ``fn.map(items, items)`` of ``add`` from this process (through the SSH tunnel to the head's
  daemon), spread over a copy of the function per node, in chunks;
* the same items in chunks to the function's one worker (what a one-node cluster does);
* the same items one call each (what ``map`` did before chunks), over a slice of ``--items``;
* Ray tasks, ``ray.get([add.remote(x, x) for x in items])``, from a driver on the head host (in the
  head's venv, so Ray's driver is as close to the cluster as it gets).

Prints a table and writes ``bench/results/map.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [
    str(REPO),
    str(REPO / "tests"),
    str(REPO / "tests" / "compute"),
    str(REPO / "tests" / "assets"),
]

MB = 1024 * 1024

_RAY_DRIVER = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
items, reps = int(sys.argv[2]), int(sys.argv[3])

@ray.remote
def add(a, b):
    return a + b

ray.get([add.remote(x, x) for x in range(500)])  # Ray's workers started before timing
rates = []
for _ in range(reps):
    start = time.perf_counter()
    out = ray.get([add.remote(x, x) for x in range(items)])
    took = time.perf_counter() - start
    assert out == [2 * x for x in range(items)]
    rates.append(items / took)
print("RATES", json.dumps(rates))
"""


def _rate(run: Any, count: int, reps: int) -> float:
    """Median items/s of ``reps`` runs of ``run()`` over ``count`` items."""
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "map.json"))
    args = parser.parse_args()

    import sshlab
    import user_funcs as uf
    from conftest import free_port

    import runhouse as rh
    from bench._funcs import add
    from runhouse.compute import raycluster
    from runhouse.compute.raynodes import RAY_REQUIREMENT, RayOptions
    from runhouse.resources.mapping import run_chunks

    raycluster.RAY_OPTIONS = RayOptions(num_cpus=1, object_store_memory=100 * MB)
    items = list(range(args.items))
    expected = [2 * x for x in items]
    with sshlab.lab(n=3, index_extra=(RAY_REQUIREMENT,)) as (hosts, _url):
        hosts.route_between_hosts()
        creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
        cluster = rh.cluster(
            name="bench-map", host=[h.address for h in hosts.hosts], ssh_creds=creds, server_port=free_port()
        )
        try:
            cluster.up()
            fn = rh.function(add).to(cluster)
            assert fn.map(items[:100], items[:100]) == expected[:100]  # the per-node copies made

            def spread() -> None:
                assert fn.map(items, items) == expected

            def one_worker() -> None:
                got = run_chunks(
                    cluster.client, [fn.name], "call", list(zip(items, items, strict=True)), {},
                    cluster.call_options.wire(), "map", "add",
                )  # fmt: skip
                assert got == expected

            few = items[: max(1, args.items // 10)]

            def one_by_one() -> None:
                fn._one_by_one([fn.name], [(x, x) for x in few], {}, cluster.call_options, "map")

            ours = _rate(spread, len(items), args.reps)
            single = _rate(one_worker, len(items), args.reps)
            per_call = _rate(one_by_one, len(few), args.reps)
            prefix = rh.function(uf.python_prefix).to(cluster)()
            gcs = cluster._daemon.ray.gcs_address  # type: ignore[attr-defined]
            command = f"{prefix}/bin/python -c {shlex.quote(_RAY_DRIVER)} {gcs} {args.items} {args.reps}"
            done = hosts.ssh(hosts.hosts[0], command, timeout=600)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RATES ")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"the Ray driver failed ({done.returncode}): {done.stderr[-2000:]}")
            ray_rate = statistics.median(json.loads(lines[-1].split(" ", 1)[1]))
        finally:
            cluster.teardown()

    rows = {
        "items": args.items,
        "reps": args.reps,
        "map_3_nodes_items_per_s": round(ours),
        "map_one_worker_items_per_s": round(single),
        "one_call_per_item_items_per_s": round(per_call),
        "ray_tasks_items_per_s": round(ray_rate),
        "map_vs_ray_tasks": round(ours / ray_rate, 2),
    }
    print(f"| measure ({args.items} items of add, median of {args.reps}) | items/s |")
    print("| --- | ---: |")
    print(f"| fn.map, 3 nodes (a copy per node, chunks) | {ours:,.0f} |")
    print(f"| fn.map in chunks to the function's one worker | {single:,.0f} |")
    print(f"| one call per item (map before chunks; {len(few)} items) | {per_call:,.0f} |")
    print(f"| Ray tasks, ray.get([add.remote(x, x) ...]) from the head | {ray_rate:,.0f} |")
    print(f"| fn.map (3 nodes) / Ray tasks | {ours / ray_rate:.2f} |")
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
