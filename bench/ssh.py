#!/usr/bin/env python
"""SSH cluster benchmark (issue: SSH clusters): ``python bench/ssh.py [--calls N]`` (as root).

Uses the test hosts of ``tests/sshhosts.py`` (network namespaces on this machine, each with its
own sshd) and measures:

* bring-up of a fresh host: connect, find python, create the venv, install runhouse from this
  checkout (wheel built once per source version, shown separately), start the daemon;
* a warm ``up_if_not()``: a new cluster object in the same process (the SSH connection and
  tunnel are reused) and from a new process (new SSH connection and tunnel);
* a trivial call's p50/p99 through the SSH tunnel vs a direct HTTP connection to a daemon on the
  same host (``server_connection_type="none"``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    os.environ["RH_HOME"] = tempfile.mkdtemp(prefix="rh-bench-ssh-")
    import sshhosts

    reason = sshhosts.skip_reason()
    if reason:
        sys.exit(f"cannot make test hosts here: {reason}")
    import runhouse as rh
    from bench._funcs import add
    from runhouse.compute import bootstrap

    with sshhosts.TestHosts(n=1) as hosts:
        host = hosts.hosts[0]
        creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
        python = sys.executable  # the hosts share this disk; see tests/compute/test_ssh_cluster.py
        venv = bootstrap.venv_for(python).replace("~", str(Path.home()))
        subprocess.run(["rm", "-rf", venv], check=True)  # a fresh host: no venv yet
        start = time.perf_counter()
        bootstrap.local_wheel(Path(os.environ["RH_HOME"]) / "wheels")
        wheel_s = time.perf_counter() - start
        port = _free_port()
        tunnel = rh.cluster(
            name="b-ssh", host=[host.address], ssh_creds=creds, python=python, server_port=port
        )
        start = time.perf_counter()
        tunnel.up()
        fresh_s = time.perf_counter() - start
        again = rh.cluster(
            name="b-ssh2", host=[host.address], ssh_creds=creds, python=python, server_port=port
        )
        start = time.perf_counter()
        again.up_if_not()
        warm_same_s = time.perf_counter() - start
        script = (
            f"import sys, time; t=time.perf_counter(); import runhouse as rh; "
            f"rh.cluster(name='w', host=['{host.address}'], ssh_creds={creds!r}, python={python!r}, "
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
            python=python,
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
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| wheel of this checkout, built once per source version | {wheel_s:.2f} s |")
    print(f"| bring-up of a fresh host (venv, install, daemon start) | {fresh_s:.2f} s |")
    print(f"| warm up_if_not(), same process (connection and tunnel reused) | {warm_same_s * 1e3:.1f} ms |")
    print(f"| warm up_if_not(), new process (new SSH connection and tunnel) | {warm_proc_s:.2f} s |")
    for label, p50, p99 in rows:
        print(f"| trivial call {label}: p50 / p99 | {p50:.3f} / {p99:.3f} ms |")
    print(f"| tunnel / direct p50 ratio | {rows[0][1] / rows[1][1]:.2f} |")


if __name__ == "__main__":
    main()
