#!/usr/bin/env python
"""Run the whole benchmark suite: ``python bench/run.py [--quick] [--out PATH]``.

Starts everything it measures on free loopback ports (our daemon with the ``runhouse start`` CLI
under a temporary ``RH_HOME``, FastAPI under plain uvicorn, Flask under gunicorn), measures, prints
Markdown tables with PASS/MISS per target, writes JSON (default ``bench/results/latest.json``) and
stops every process it started, by pid. Exits non-zero only when something crashes; a missed
target is reported, not raised.

Order: cold starts first (quiet machine), then one daemon for the rest: idle RSS right after it
starts, the memory-growth run (which also warms it), sequential latency, throughput, and the
100 MB transfer last (it leaves large buffers behind).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

import runhouse as rh  # noqa: E402
from bench import latency, memory, report, startup, throughput, transfer  # noqa: E402
from bench._funcs import add  # noqa: E402
from bench.rawhttp import RawHTTPClient  # noqa: E402
from bench.servers import Daemon, Service, free_port, gunicorn_workers, start_fastapi, start_gunicorn  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    startup_reps: int
    memory_calls: int
    latency_calls: int  # per variant
    latency_rounds: int
    wrk_seconds: int
    wrk_rounds: int
    wrk_warm_s: int
    transfer_reps: int


FULL = Plan(
    startup_reps=5,
    memory_calls=100_000,
    latency_calls=10_000,
    latency_rounds=40,
    wrk_seconds=10,
    wrk_rounds=3,
    wrk_warm_s=2,
    transfer_reps=7,
)
QUICK = Plan(
    startup_reps=2,
    memory_calls=5_000,
    latency_calls=1_500,
    latency_rounds=3,
    wrk_seconds=3,
    wrk_rounds=1,
    wrk_warm_s=1,
    transfer_reps=3,
)


def source_fingerprint() -> str:
    """A hash of every runhouse source file, so numbers can be tied to the exact code measured."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "runhouse").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat: steal is time the hypervisor gave away."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "runhouse"], cwd=REPO, capture_output=True, text=True
    ).stdout.splitlines()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runhouse": rh.__version__,
        "git_commit": commit,
        "runhouse_files_changed_since_commit": len(dirty),
        "runhouse_source_sha256": source_fingerprint(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "loadavg_start": os.getloadavg(),
        "gunicorn_workers": gunicorn_workers(),
    }


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _raw(clients: dict[str, RawHTTPClient], plan: Plan) -> dict[str, Any]:
    try:
        return latency.raw_latency(clients, plan.latency_calls, plan.latency_rounds)
    finally:
        for client in clients.values():
            client.close()


def measure_latency(fn: Any, daemon: Daemon, ports: dict[str, int], plan: Plan) -> dict[str, Any]:
    """Stub on/off, raw HTTP to the three servers, and raw HTTP to ours with stream_logs on/off."""
    log("sequential latency: Python stub, streaming on and off")
    out = {"stub": latency.stub_latency(fn, plan.latency_calls, plan.latency_rounds)}
    log("sequential latency: raw HTTP, same client for all three servers")
    headers = daemon.auth_headers  # sent to every server, so every request is the same bytes
    out["raw"] = _raw({name: RawHTTPClient(port, headers=headers) for name, port in ports.items()}, plan)
    log("sequential latency: raw HTTP to runhouse, stream_logs true vs false in the body")
    out["raw_streaming"] = _raw(
        {
            f"stream_logs={str(flag).lower()}": RawHTTPClient(
                daemon.port, body=latency.streaming_body(flag), headers=headers
            )
            for flag in (True, False)
        },
        plan,
    )
    return out


def run(plan: Plan, work: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Every measurement, in the order described in the module docstring."""
    results: dict[str, Any] = {"meta": machine(), "plan": asdict(plan)}
    steal0, total0 = cpu_ticks()

    log(f"start to first call, {plan.startup_reps} cold starts")
    results["startup"] = startup.start_to_first_call(work, plan.startup_reps)

    log("starting the runhouse daemon and the two baselines")
    daemon = Daemon.start(work / "rh-home", free_port())
    stack.callback(daemon.stop)
    results["memory"] = {"idle": memory.idle(daemon)}
    services: dict[str, Service] = {}
    for start in (start_fastapi, start_gunicorn):
        service = start(free_port(), work)
        stack.callback(service.stop)
        services[service.name] = service
    ports = {report.OURS: daemon.port, **{name: s.port for name, s in services.items()}}

    cluster = daemon.cluster()
    fn = rh.function(add).to(cluster)
    log(f"memory growth over {plan.memory_calls:,} sequential calls")
    results["memory"]["growth"] = memory.growth(daemon, lambda: fn(1, 2), plan.memory_calls)

    results["latency"] = measure_latency(fn, daemon, ports, plan)

    log(f"throughput: wrk -t1 -c64 -d{plan.wrk_seconds}s, {plan.wrk_rounds} round(s)")
    lua = throughput.write_lua(work / "post.lua", daemon.auth_headers)
    results["throughput"] = throughput.compare(
        {name: (port, lua) for name, port in ports.items()},
        plan.wrk_seconds,
        plan.wrk_rounds,
        plan.wrk_warm_s,
    )

    log(f"100 MB round trip, {plan.transfer_reps} timed calls")
    results["transfer"] = transfer.round_trip(cluster, plan.transfer_reps)
    log(f"100 MB round trip without shared memory, {plan.transfer_reps} timed calls")
    results["transfer_sockets"] = transfer.round_trip(cluster, plan.transfer_reps, shm=False)
    results["memory"]["after_all"] = memory.snapshot(daemon)
    results["meta"]["loadavg_end"] = os.getloadavg()
    end_fingerprint = source_fingerprint()
    if end_fingerprint != results["meta"]["runhouse_source_sha256"]:
        log("WARNING: runhouse source files changed while the benchmark ran; numbers mix two versions")
        results["meta"]["runhouse_source_sha256_end"] = end_fingerprint
    steal1, total1 = cpu_ticks()
    results["meta"]["cpu_steal_pct"] = round(100 * (steal1 - steal0) / max(1, total1 - total0), 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (under a minute)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cleanup below still runs
    work = Path(tempfile.mkdtemp(prefix="rh-bench-"))
    began = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            results = run(plan, work, stack)
            log("stopping servers")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["meta"]["mode"] = "quick" if args.quick else "full"
    results["meta"]["wall_s"] = round(time.perf_counter() - began, 1)
    checked = report.targets(results)
    print()
    print(report.markdown(results, checked))
    report.write_json(results, checked, args.out)
    print(f"\n{sum(t.passed for t in checked)}/{len(checked)} targets met; JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
