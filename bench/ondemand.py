"""From SkyPilot reporting the host ready to the first call, on a fresh test host.

    sudo .venv/bin/python bench/ondemand.py        # needs root for the network-namespace hosts

SkyPilot runs for real on a shipped catalog; its backend's cloud step hands back a fresh
network-namespace SSH host (tests/compute/skylab.py) and stamps the moment it does. We time from that
stamp to the first call's result (our bootstrap: venv, wheel, install from the host's index,
daemon, tunnel, deploy, call). The baseline, in the same run, is the same bring-up of a plain SSH
cluster on another fresh host (rh.cluster(host=...)): the ratio shows what the on-demand path adds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "compute"), str(ROOT / "tests" / "assets")]

import skylab  # noqa: E402
import sshlab  # noqa: E402
import user_funcs as uf  # noqa: E402
from conftest import free_port  # noqa: E402


def main() -> None:
    os.environ.setdefault("RH_HOME", tempfile.mkdtemp(prefix="rh-bench-home-"))
    skylab.sky_home(Path(tempfile.mkdtemp(prefix="rh-bench-sky-")))
    import runhouse as rh

    with sshlab.lab(n=2) as (hosts, _url):
        cloud = skylab.Cloud(hosts=[hosts.hosts[0]], private_key=hosts.private_key)
        ready: list[float] = []
        original = skylab.netns_backend

        def stamped(c: skylab.Cloud):
            backend = original(c)
            provision = backend._provision

            def timed(*args, **kwargs):
                out = provision(*args, **kwargs)
                ready.append(time.perf_counter())  # SkyPilot has the host: from here on it is ours
                return out

            backend._provision = timed
            return backend

        skylab.netns_backend = stamped
        with skylab.install(cloud):
            gpu = rh.cluster(
                name="bench-a10x", instance_type="A10G:1", provider="aws", server_port=free_port()
            )
            gpu.up()
            assert rh.function(uf.add).to(gpu)(1, 2) == 3
            ondemand = time.perf_counter() - ready[0]
            gpu.teardown()

        start = time.perf_counter()
        creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
        box = rh.cluster(
            name="bench-ssh", host=[hosts.hosts[1].address], ssh_creds=creds, server_port=free_port()
        )
        box.up()
        assert rh.function(uf.add).to(box)(1, 2) == 3
        baseline = time.perf_counter() - start
        box.teardown()
    print(f"on-demand: SkyPilot host ready -> first call: {ondemand:.2f} s")
    print(f"baseline:  plain SSH cluster, fresh host -> first call: {baseline:.2f} s")
    print(f"ratio on-demand/baseline: {ondemand / baseline:.2f}  (goal: on-demand under 5 s)")


if __name__ == "__main__":
    main()
