"""From SkyPilot reporting the host ready to the first call, on a fresh test host.

    sudo .venv/bin/python bench/ondemand.py [--rounds 3]   # root: network-namespace hosts

SkyPilot runs for real on a shipped catalog; its backend's cloud step hands back a fresh
network-namespace SSH host (tests/compute/skylab.py) and stamps the moment it does. We time from that
stamp to the first call's result (SkyPilot's launch stages after provisioning, then our bootstrap:
venv, wheel, install from the host's index, daemon, tunnel, deploy, call). The baseline, in the same
run, is the same bring-up of a plain SSH cluster (``rh.cluster(host=...)``) on another fresh host,
bare (``ssh``) and with uv where SkyPilot's runtime setup leaves it on its nodes (``ssh+uv``; the test
backend puts it there on the on-demand hosts too, tests/compute/skylab.py), so ``sky``/``ssh+uv``
is what the on-demand path itself adds and ``sky``/``ssh`` what a SkyPilot host brings.

Fairness: every host is fresh (its own venv, nothing installed), but all hosts of a run share one
package cache, as machines behind one proxy or on one image would; a first, unmeasured bring-up
fills it, and the paths then take turns, each round starting with the next one, so none gains
from going first. Each bring-up's own step times (our bootstrap's progress lines) are printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
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

STEP = re.compile(r"^\[[^\]]+\] (.*) \[(\d+\.\d)s\]$")


class Tee(io.TextIOBase):
    """stderr as it was, and a copy we read the bootstrap's step times from."""

    def __init__(self, under: io.TextIOBase) -> None:
        self.under = under
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.extend(text.splitlines())
        return self.under.write(text)

    def flush(self) -> None:
        self.under.flush()


def steps(lines: list[str]) -> list[tuple[float, str]]:
    """(seconds since the bootstrap began, step) for each progress line, installer lines left out."""
    found = []
    for line in lines:
        m = STEP.match(line)
        if m and not m.group(1).startswith(("uv: ", "pip: ")):
            found.append((float(m.group(2)), m.group(1)[:70]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the three paths, each round starting with the next path",
    )
    args = parser.parse_args()
    os.environ.setdefault("RH_HOME", tempfile.mkdtemp(prefix="rh-bench-home-"))
    skylab.make_sky_home(Path(tempfile.mkdtemp(prefix="rh-bench-sky-")))
    import runhouse as rh

    paths = ["sky", "ssh", "ssh+uv"]
    order = ["warm-up"] + [p for r in range(args.rounds) for p in paths[r % 3 :] + paths[: r % 3]]
    results: dict[str, list[float]] = {p: [] for p in paths}
    after_up: dict[str, list[float]] = {p: [] for p in paths}  # up() returned -> first call's result
    with sshlab.lab(n=len(order)) as (hosts, _url):
        free = list(hosts.hosts)
        cloud = skylab.Cloud(hosts=[], private_key=hosts.private_key)
        ready: list[float] = []
        original = skylab.netns_backend

        def stamped(c: skylab.Cloud):
            backend = original(c)
            provision = backend._provision

            def timed(*a, **kw):
                out = provision(*a, **kw)
                ready.append(time.perf_counter())  # SkyPilot has the host: from here on it is ours
                return out

            backend._provision = timed
            return backend

        skylab.netns_backend = stamped
        creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
        with skylab.install(cloud):
            for i, path in enumerate(order):
                host = free.pop(0)
                tee = Tee(sys.stderr)
                with contextlib.redirect_stderr(tee):
                    if path == "sky":
                        cloud.hosts = [host]
                        made = rh.cluster(
                            name=f"bench-a10x-{i}",
                            instance_type="A10G:1",
                            provider="aws",
                            server_port=free_port(),
                        )
                        made.up()
                        start = ready[-1]
                    else:
                        if path == "ssh+uv":  # uv where SkyPilot's runtime setup leaves it, nothing else
                            skylab.skypilot_runtime(host)
                        start = time.perf_counter()
                        made = rh.cluster(
                            name=f"bench-ssh-{i}",
                            host=[host.address],
                            ssh_creds=creds,
                            server_port=free_port(),
                        )
                        made.up()
                    was_up = time.perf_counter() - start
                    assert rh.function(uf.add).to(made)(1, 2) == 3
                    took = time.perf_counter() - start
                    made.teardown()
                if path != "warm-up":
                    results[path].append(took)
                    after_up[path].append(took - was_up)
                print(
                    f"\n== {path} on {host.address}: host ready -> first call {took:.2f} s (up() returned at {was_up:.2f} s)",
                    file=sys.stderr,
                )
                for at, step in steps(tee.lines):
                    print(f"   {at:5.1f}s  {step}", file=sys.stderr)
    for path in paths:
        times = ", ".join(f"{t:.2f}" for t in results[path])
        tail = ", ".join(f"{t:.2f}" for t in after_up[path])
        print(
            f"{path:7s} host ready -> first call: {times} s (of which up() returned -> first call: {tail} s)"
        )
    sky, ssh, ssh_uv = (statistics.median(results[p]) for p in paths)
    print(
        f"median: on-demand {sky:.2f} s, plain SSH {ssh:.2f} s (ratio {sky / ssh:.2f}), plain SSH with uv on the "
        f"host {ssh_uv:.2f} s (ratio {sky / ssh_uv:.2f})  (goal: on-demand under 5 s)"
    )


if __name__ == "__main__":
    main()
