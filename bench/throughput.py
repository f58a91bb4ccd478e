"""Throughput with 64 calls in flight: ``wrk -t1 -c64 -d<N>s --latency -s <post.lua>`` per server.

Every server gets the same Lua script (method, headers and body of the raw-HTTP call). Each server
is warmed with a short run first; then the measured runs go round the servers ``rounds`` times in
alternating order, and the best run of each server is reported (noise on a shared machine only
ever slows a run down, and every server gets the same number of tries).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.rawhttp import CALL_BODY, CALL_PATH

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def write_lua(path: Path, headers: dict[str, str], body: bytes = CALL_BODY) -> Path:
    """A wrk script that POSTs ``body`` with ``headers`` (a Lua long string holds the JSON as is)."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [[{body.decode()}]]",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f'wrk.headers["{name}"] = [[{value}]]' for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, request count, latency percentiles (ms) and error counts from wrk's output."""
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["calls_per_s"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    out["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        out[f"p{pct}_ms"] = round(_ms(m.group(1), m.group(2)), 3) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)) if m else {}
    )
    return out


def run_wrk(port: int, lua: Path, seconds: int, connections: int = 64, threads: int = 1) -> dict[str, Any]:
    """One wrk run against ``POST http://127.0.0.1:port/add/call``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(lua),
        f"http://127.0.0.1:{port}{CALL_PATH}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    result["command"] = " ".join(argv[:-3] + ["post.lua", argv[-1]])
    if result["calls_per_s"] is None:
        raise RuntimeError(f"could not parse wrk output:\n{done.stdout}")
    return result


def compare(
    servers: dict[str, tuple[int, Path]], seconds: int, rounds: int, warm_s: int, connections: int = 64
) -> dict[str, dict[str, Any]]:
    """``servers`` maps a name to (port, lua script). Returns the best run and all runs per server."""
    names = list(servers)
    for name in names:
        port, lua = servers[name]
        run_wrk(port, lua, warm_s, connections)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            port, lua = servers[name]
            runs[name].append(run_wrk(port, lua, seconds, connections))
    results = {}
    for name in names:
        best = max(runs[name], key=lambda run: run["calls_per_s"])
        results[name] = {**best, "all_calls_per_s": [run["calls_per_s"] for run in runs[name]]}
    return results
