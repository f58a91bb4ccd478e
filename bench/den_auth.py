#!/usr/bin/env python
"""Added latency of Den auth on calls (issue: Den): ``python bench/den_auth.py [--calls N] [--rounds R]``.

Starts, under a temporary ``RH_HOME``: a Den on SQLite (``runhouse den start``) with one user, and
two daemons on this machine: one plain, one with ``den_auth=True``. ``add`` is deployed to both.
The plain daemon is called with its cluster token; the den_auth daemon with a token Den issued for
that cluster, so every call goes through the Den check (answered from the daemon's cache once warm).

Both stubs are timed in alternating rounds (each round starts with untimed calls), one call at a
time; p50/p99 and the ratio den_auth / plain are printed as Markdown (goal: p50 ratio < 1.10), and
the den_auth daemon's cache counters show that Den was asked once, not once per call.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "runhouse.cli", *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"runhouse {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="timed calls per round and server")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rh-bench-denauth-"))
    os.environ["RH_HOME"] = str(work / "home")
    data = work / "den"
    db = f"sqlite:///{data / 'den.sqlite'}"
    den_port = _free_port()
    _cli("den", "start", "--port", str(den_port), "--db", db, "--data-dir", str(data))
    clusters = []
    try:
        token = _cli("den", "user", "add", "bench", "--db", db).strip().splitlines()[-1]
        os.environ.update(RH_TOKEN=token, RH_DEN_URL=f"http://127.0.0.1:{den_port}")

        import runhouse as rh
        from bench._funcs import add
        from runhouse.client.daemon_client import DaemonClient
        from runhouse.client.den import DenClient
        from runhouse.client.transport import Endpoint

        plain = rh.cluster(name="plain", host="localhost", server_port=_free_port()).up()
        clusters.append(plain)
        guarded = rh.cluster(name="guarded", host="localhost", server_port=_free_port(), den_auth=True).up()
        clusters.append(guarded)
        stubs = {"plain": rh.function(add).to(plain), "den_auth": rh.function(add).to(guarded)}
        den_token = DenClient(os.environ["RH_DEN_URL"], token).cluster_token(str(guarded.rns_address))
        as_user = DaemonClient(Endpoint("127.0.0.1", guarded.server_port), den_token)
        stubs["den_auth"].system.__dict__["client"] = as_user  # calls carry the Den-issued token
        assert stubs["plain"](1, 2) == 3 and stubs["den_auth"](1, 2) == 3

        samples: dict[str, list[float]] = {name: [] for name in stubs}
        for round_no in range(args.rounds):
            order = list(stubs) if round_no % 2 == 0 else list(stubs)[::-1]
            for name in order:
                fn = stubs[name]
                for _ in range(20):
                    fn(1, 2)
                for _ in range(args.calls):
                    start = time.perf_counter()
                    fn(1, 2)
                    samples[name].append(time.perf_counter() - start)
        den_stats = guarded.status()["den"]
        result = {
            name: {
                "p50_ms": _pct(s, 0.5),
                "p99_ms": _pct(s, 0.99),
                "calls": len(s),
                "calls_per_s": len(s) / sum(s),
            }
            for name, s in samples.items()
        }
        ratio = result["den_auth"]["p50_ms"] / result["plain"]["p50_ms"]
        print("| daemon | p50 ms | p99 ms | calls/s | calls |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, r in result.items():
            print(
                f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['calls_per_s']:.0f} | {r['calls']} |"
            )
        print(
            f"\np50 ratio den_auth / plain: {ratio:.3f} (goal < 1.10): {'PASS' if ratio < 1.10 else 'MISS'}"
        )
        print(
            f"den_auth daemon: {den_stats['den_lookups']} Den lookups, {den_stats['cache_hits']} cache hits"
        )
        if args.out:
            args.out.write_text(
                json.dumps({"results": result, "ratio_p50": ratio, "den": den_stats}, indent=2)
            )
    finally:
        for cluster in clusters:
            cluster.teardown()
        _cli("den", "stop", "--data-dir", str(data))


if __name__ == "__main__":
    main()
