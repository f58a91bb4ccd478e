#!/usr/bin/env python
"""SSH cluster benchmark (issue: SSH clusters): ``python bench/ssh.py [--calls N] [--fresh N]`` (as root).

Uses the test hosts of ``tests/sshhosts.py`` (network namespaces on this machine, each with its
own sshd and home) which install runhouse as a user's hosts do (``tests/compute/sshlab.py``):
the client's wheel goes up, uv (brought in with pip: the hosts have none) installs it with its
dependencies from a package index served to them over HTTP. Measures:

* a fresh host, from nothing (no venv, no uv, no runhouse) to the first call's result: once with
  an empty package cache, then on ``--fresh`` more fresh hosts whose package cache is warm (the
  hosts share one cache folder, as a machine that installed before has its cache);
* building the client's wheel (in-process, once per source version);
* a warm ``up_if_not()``: a new cluster object in the same process (the SSH connection and
  tunnel are reused) and from a new process (new SSH connection and tunnel);
* a trivial call's p50/p99 through the SSH tunnel vs a direct HTTP connection to a daemon on the
  same host (``server_connection_type="none"``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "compute")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1e3


def _to_first_call(address: str, creds: dict[str, str], name: str) -> float:
    """Seconds from a new cluster object to the first call's result, on a host with nothing."""
    import runhouse as rh
    from bench._funcs import add

    start = time.perf_counter()
    cluster = rh.cluster(name=name, host=[address], ssh_creds=creds, server_port=_free_port()).up_if_not()
    assert rh.function(add).to(cluster)(1, 2) == 3
    took = time.perf_counter() - start
    cluster.teardown()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--fresh", type=int, default=3, help="fresh hosts with a warm package cache")
    args = parser.parse_args()
    os.environ["RH_HOME"] = tempfile.mkdtemp(prefix="rh-bench-ssh-")
    import sshhosts
    import sshlab

    reason = sshhosts.skip_reason(sshlab.PREREQUISITES)
    if reason:
        sys.exit(f"cannot make test hosts here: {reason}")
    import runhouse as rh
    from bench._funcs import add
    from runhouse.compute.wheel import client_wheel

    with sshlab.lab(n=2 + args.fresh) as (hosts, _):
        creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
        start = time.perf_counter()
        client_wheel(Path(tempfile.mkdtemp(prefix="rh-bench-wheel-")))
        wheel_s = time.perf_counter() - start
        cold_s = _to_first_call(hosts.hosts[0].address, creds, "b-cold")
        warm = [_to_first_call(h.address, creds, f"b-warm{i}") for i, h in enumerate(hosts.hosts[2:])]
        host = hosts.hosts[1]
        port = _free_port()
        tunnel = rh.cluster(name="b-ssh", host=[host.address], ssh_creds=creds, server_port=port).up()
        again = rh.cluster(name="b-ssh2", host=[host.address], ssh_creds=creds, server_port=port)
        start = time.perf_counter()
        again.up_if_not()
        warm_same_s = time.perf_counter() - start
        script = (
            f"import sys, time; t=time.perf_counter(); import runhouse as rh; "
            f"rh.cluster(name='w', host=['{host.address}'], ssh_creds={creds!r}, "
            f"server_port={port}).up_if_not(); print(time.perf_counter()-t)"
        )
        warm_proc_s = float(
            subprocess.run(
                [sys.executable, "-c", script],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ),
            ).stdout.split()[-1]
        )
        direct = rh.cluster(
            name="b-none",
            host=[host.address],
            ssh_creds=creds,
            server_port=_free_port(),
            server_connection_type="none",
        ).up_if_not()
        rows = []
        for label, cluster in (("through the SSH tunnel", tunnel), ("direct HTTP (none)", direct)):
            fn = rh.function(add).to(cluster)
            for _ in range(200):
                fn(1, 2)
            samples = []
            for _ in range(args.calls):
                t = time.perf_counter()
                fn(1, 2)
                samples.append(time.perf_counter() - t)
            rows.append((label, _p(samples, 50), _p(samples, 99)))
        direct.teardown()
        tunnel.teardown()
    warm_text = " / ".join(f"{s:.2f}" for s in warm)
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| fresh host to first call, empty package cache | {cold_s:.2f} s |")
    print(
        f"| fresh host to first call, warm package cache: median (each) | "
        f"{statistics.median(warm):.2f} s ({warm_text}) |"
    )
    print(f"| wheel of the client's runhouse, built once per source version | {wheel_s * 1e3:.0f} ms |")
    print(f"| warm up_if_not(), same process (connection and tunnel reused) | {warm_same_s * 1e3:.1f} ms |")
    print(f"| warm up_if_not(), new process (new SSH connection and tunnel) | {warm_proc_s:.2f} s |")
    for label, p50, p99 in rows:
        print(f"| trivial call {label}: p50 / p99 | {p50:.3f} / {p99:.3f} ms |")
    print(f"| tunnel / direct p50 ratio | {rows[0][1] / rows[1][1]:.2f} |")


if __name__ == "__main__":
    main()
