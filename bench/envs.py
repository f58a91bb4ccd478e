#!/usr/bin/env python
"""Env benchmark (issue: envs): ``python bench/envs.py [--reps N]``.

Measures, against a fresh local daemon under a temporary ``RH_HOME``:

* creating an env with one small requirement already in the installer's cache (``six``: in a venv
  the 1.16.0 release, in the daemon's shared Python the version already there, so the benchmark
  changes nothing outside its temporary folders) and sending a function to it, end to end as ``rh.function(f).to(cluster, env=...)`` (target
  <= 3 s), for an env sharing the daemon's Python and for one with its own venv;
* re-sending a changed function to an existing env: edit its source file, ``.to()`` again and get
  the first result (target <= 0.5 s).

Prints a Markdown table; each figure is the median of ``--reps`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.environ["RH_HOME"] = tempfile.mkdtemp(prefix="rh-bench-envs-")
    import runhouse as rh

    installed_six = metadata.version("six")

    code_dir = Path(tempfile.mkdtemp(prefix="rh-bench-code-"))
    (code_dir / "bench_env_code.py").write_text("def version():\n    return 0\n")
    sys.path.insert(0, str(code_dir))
    import bench_env_code

    cluster = rh.cluster(name="bench-envs", host="localhost", server_port=_free_port()).up()
    try:
        warm = rh.env(reqs=["six==1.16.0"], name="warm-cache", venv=True)  # fills the installer's cache
        rh.function(bench_env_code.version).to(cluster, env=warm, name="warm")
        results: dict[str, list[float]] = {
            "new env, shared Python": [],
            "new env, own venv": [],
            "re-send": [],
        }
        for rep in range(args.reps):
            for label, venv in (("new env, shared Python", False), ("new env, own venv", True)):
                name = f"e{uuid.uuid4().hex[:8]}"
                req = "six==1.16.0" if venv else f"six=={installed_six}"
                start = time.perf_counter()
                fn = rh.function(bench_env_code.version).to(
                    cluster, env=rh.env(reqs=[req], name=name, venv=venv), name=f"v_{name}"
                )
                fn()
                results[label].append(time.perf_counter() - start)
            source = code_dir / "bench_env_code.py"
            source.write_text(f"def version():\n    return {rep + 1}\n")
            start = time.perf_counter()
            result = rh.function(bench_env_code.version).to(cluster, env="warm-cache", name="warm")()
            results["re-send"].append(time.perf_counter() - start)
            assert result == rep + 1, "the edited code must be what runs"
        print(f"| measure (median of {args.reps}) | seconds | target | verdict |")
        print("| --- | ---: | ---: | --- |")
        targets = {"new env, shared Python": 3.0, "new env, own venv": 3.0, "re-send": 0.5}
        for label, samples in results.items():
            value = statistics.median(samples)
            verdict = "PASS" if value <= targets[label] else "MISS"
            print(f"| {label} | {value:.3f} | <= {targets[label]} | {verdict} |")
    finally:
        cluster.teardown()


if __name__ == "__main__":
    main()
