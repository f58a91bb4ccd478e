#!/usr/bin/env python
"""Per-unit costs for projecting a large cluster: ``python bench/scale.py [--quick]``.

Everything runs on this one machine, under a temporary ``RH_HOME``, on free ports on 127.0.0.1, and
every process started here is stopped by pid at the end. It measures what a head daemon and Den pay
per unit of work, so that ``docs/scale.md`` can multiply them out for 100 nodes and 100 clusters:

* **routing**: daemon (and worker) CPU seconds per routed ``POST /add/call``, read with psutil from
  the daemon's and the worker's ``cpu_times`` around the calls: one call at a time (``rawhttp``
  client), and under ``wrk -t1 -c64``. 1 / (daemon CPU per call) is the most calls/s one daemon core
  can route;
* **connections**: daemon RSS before and after opening ``--conns`` idle keep-alive connections
  (each has made one call, so it holds a parsed-request protocol object), per connection; the first
  round is the figure, later rounds only show that the freed memory is reused;
* **workers**: daemon RSS and each worker's RSS/USS before and after starting ``--envs`` envs
  (shared Python, one function each) and after 1 s of ``wrk -c16`` on each, per worker; and the
  daemon's idle CPU with them all up (measured before the connections, whose freed memory new
  channels would otherwise reuse);
* **IPC**: the daemon-worker channel (``runhouse.protocol.ipc.Channel``) on its own, between this
  process and an echo child, with call-shaped messages: round trip and CPU per message on each side,
  one at a time and 64 in flight, over a ``socketpair`` (today's channel) and over TCP loopback
  (what a socket to a worker on another node would cost, less the network);
* **Den**: ``runhouse den start`` on SQLite with ``--clusters`` saved clusters, each with its own
  daemon token; ``POST /v1/clusters/{o}/{n}/heartbeat`` (a status like the daemon's) and
  ``POST /v1/events`` (batches of 1, 10 and 100 rows) and ``POST /v1/auth/check``, round-robin over the clusters: latency, Den
  CPU per request, database bytes per usage row, and ``GET /v1/usage?since=1d`` timed over the rows
  stored so far and again over twice as many.

Each part repeats ``--reps`` times; the table shows the median and the range (min-max) of the reps.
JSON goes to ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

MB = 2**20
KB = 2**10


def log(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def cpu_s(proc: Any) -> float:
    """User + system CPU seconds of a psutil.Process (its own threads, not its children)."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and the range as a fraction of the median."""
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "range_pct": round(100 * (max(values) - min(values)) / med, 1) if med else None,
        "all": values,
    }


# --------------------------------------------------------------------------------------- routing
def measure_routing(daemon: Any, work: Path, reps: int, calls: int, wrk_s: int) -> dict[str, Any]:
    import psutil

    from bench import throughput
    from bench.rawhttp import RawHTTPClient, check_call

    dproc = psutil.Process(daemon.pid)
    wproc = psutil.Process(daemon.wait_for_worker())
    client = RawHTTPClient(daemon.port, headers=daemon.auth_headers)
    for _ in range(2000):  # warm: the worker promotes `add` to its loop after 16 fast runs
        check_call(client)
    seq: dict[str, list[float]] = {"daemon_us": [], "worker_us": [], "wall_us": []}
    for _ in range(reps):
        d0, w0, t0 = cpu_s(dproc), cpu_s(wproc), time.perf_counter()
        for _ in range(calls):
            client.call()
        t1, d1, w1 = time.perf_counter(), cpu_s(dproc), cpu_s(wproc)
        seq["daemon_us"].append(round((d1 - d0) / calls * 1e6, 1))
        seq["worker_us"].append(round((w1 - w0) / calls * 1e6, 1))
        seq["wall_us"].append(round((t1 - t0) / calls * 1e6, 1))
    client.close()

    lua = throughput.write_lua(work / "post.lua", daemon.auth_headers)
    throughput.run_wrk(daemon.port, lua, 2)  # warm-up
    conc: dict[str, list[float]] = {
        "daemon_us": [],
        "worker_us": [],
        "calls_per_s": [],
        "daemon_busy": [],
        "p50_ms": [],
        "p99_ms": [],
    }
    errors = 0
    for _ in range(reps):
        d0, w0, t0 = cpu_s(dproc), cpu_s(wproc), time.perf_counter()
        run = throughput.run_wrk(daemon.port, lua, wrk_s)
        t1, d1, w1 = time.perf_counter(), cpu_s(dproc), cpu_s(wproc)
        n = run["requests"]
        errors += run["non_2xx"] + sum(run["socket_errors"].values())
        conc["daemon_us"].append(round((d1 - d0) / n * 1e6, 1))
        conc["worker_us"].append(round((w1 - w0) / n * 1e6, 1))
        conc["calls_per_s"].append(run["calls_per_s"])
        # wrk's own start and stop are inside t1 - t0, so this slightly understates how busy it was
        conc["daemon_busy"].append(round((d1 - d0) / (t1 - t0), 2))
        conc["p50_ms"].append(run["p50_ms"])
        conc["p99_ms"].append(run["p99_ms"])
    return {
        "sequential": {k: spread(v) for k, v in seq.items()},
        "sequential_calls_per_rep": calls,
        "concurrent_64": {k: spread(v) for k, v in conc.items()},
        "wrk_seconds": wrk_s,
        "wrk_errors": errors,
    }


# ----------------------------------------------------------------------------------- connections
def _drain(sock: socket.socket) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf or not buf.endswith(b"3"):
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("daemon closed a connection")
        buf += chunk


def measure_connections(daemon: Any, reps: int, conns: int) -> dict[str, Any]:
    import psutil

    from bench.rawhttp import CALL_BODY, CALL_PATH, build_request

    dproc = psutil.Process(daemon.pid)
    request = build_request(daemon.port, CALL_PATH, CALL_BODY, daemon.auth_headers)
    per_conn: list[float] = []
    rounds = []
    for _ in range(reps):
        time.sleep(0.5)
        before = dproc.memory_info().rss
        socks = []
        try:
            for _ in range(conns):
                s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(request)
                _drain(s)
                socks.append(s)
            time.sleep(1.0)
            during = dproc.memory_info().rss
            fds = dproc.num_fds()
        finally:
            for s in socks:
                s.close()
        time.sleep(1.0)
        after = dproc.memory_info().rss
        per_conn.append(round((during - before) / conns, 0))
        rounds.append(
            {
                "rss_before_mb": round(before / MB, 2),
                "rss_open_mb": round(during / MB, 2),
                "rss_closed_mb": round(after / MB, 2),
                "daemon_fds_open": fds,
            }
        )
    # the first round is what the connections cost; later rounds reuse the memory the first one left
    # in the daemon's allocator, so they show how little is kept, not what a connection needs
    return {
        "connections": conns,
        "bytes_per_conn_first": per_conn[0],
        "bytes_per_conn_reopened": spread(per_conn[1:]) if len(per_conn) > 1 else None,
        "rounds": rounds,
    }


# ---------------------------------------------------------------------------------------- workers
def _wrk_path(daemon: Any, work: Path, path: str, seconds: int, connections: int) -> None:
    """``wrk`` against one call path (bench/throughput.py's script, another URL)."""
    from bench import throughput

    lua = throughput.write_lua(work / "post.lua", daemon.auth_headers)
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "-s",
        str(lua),
        f"http://127.0.0.1:{daemon.port}{path}",
    ]
    subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)


def measure_workers(daemon: Any, work: Path, envs: int) -> dict[str, Any]:
    import psutil

    import runhouse as rh
    from bench._funcs import add

    cluster = daemon.cluster()
    dproc = psutil.Process(daemon.pid)
    default_pid = daemon.wait_for_worker()

    def worker_mem() -> dict[int, tuple[int, int]]:
        out = {}
        for child in dproc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                full = child.memory_full_info()
                out[child.pid] = (full.rss, full.uss)
        return out

    time.sleep(0.5)
    d_before = dproc.memory_info().rss
    w_before = worker_mem()
    began = time.perf_counter()
    for i in range(envs):
        fn = rh.function(add).to(cluster, env=rh.env(name=f"scale{i}"), name=f"add{i}")
        assert fn(1, 2) == 3
    start_s = (time.perf_counter() - began) / envs
    time.sleep(1.0)
    d_after = dproc.memory_info().rss
    w_after = worker_mem()
    new = [pid for pid in w_after if pid not in w_before]
    daemon.remember()
    # pipelined calls fill each channel's receive buffer (256 KiB of scratch per channel in the daemon)
    for i in range(envs):
        _wrk_path(daemon, work, f"/add{i}/call", seconds=1, connections=16)
    time.sleep(0.5)
    d_traffic = dproc.memory_info().rss
    # the daemon's CPU with all workers up and nothing to do (its own timers, workers' pings)
    idle_window = 5.0
    c0 = cpu_s(dproc)
    time.sleep(idle_window)
    idle_cpu = (cpu_s(dproc) - c0) / idle_window
    return {
        "envs_started": envs,
        "new_worker_processes": len(new),
        "seconds_per_env_to_first_call": round(start_s, 3),
        "daemon_rss_per_worker_kb": round((d_after - d_before) / max(1, len(new)) / KB, 1),
        "daemon_rss_per_worker_after_load_kb": round((d_traffic - d_before) / max(1, len(new)) / KB, 1),
        "worker_rss_mb": spread([round(w_after[p][0] / MB, 2) for p in new]) if new else None,
        "worker_uss_mb": spread([round(w_after[p][1] / MB, 2) for p in new]) if new else None,
        "default_worker_rss_mb": round(w_after.get(default_pid, (0, 0))[0] / MB, 2),
        "daemon_rss_mb": {
            "before": round(d_before / MB, 2),
            "after": round(d_after / MB, 2),
            "after_load": round(d_traffic / MB, 2),
        },
        "daemon_idle_cpu_pct": round(100 * idle_cpu, 3),
    }


# -------------------------------------------------------------------------------------------- IPC
CALL_HEADER_OPTS: dict[str, Any] = {"stream_logs": False}
ARGS_PAYLOAD = pickle.dumps({"args": [1, 2], "kwargs": {}}, protocol=5)


async def _echo_child(fd: int | None, port: int | None) -> None:
    """The worker's side of the channel, minus running the method: answer each call with ``ok``."""
    from runhouse.protocol.ipc import Channel

    if fd is not None:
        sock = socket.socket(fileno=fd)
    else:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def on_message(header: Any, body: Any) -> None:
        channel.send(("ok", header[1], 3), None)

    def on_close(exc: Exception | None) -> None:
        if not closed.done():
            closed.set_result(None)

    channel = Channel(on_message, on_close)  # made first: a message can arrive as the socket opens
    await loop.connect_accepted_socket(lambda: channel, sock)
    await closed


async def _ipc_parent(sock: socket.socket, child: Any, n: int, inflight: int) -> dict[str, float]:
    import psutil

    from runhouse.protocol.ipc import open_channel

    me = psutil.Process()
    waiting: dict[int, asyncio.Future[Any]] = {}
    loop = asyncio.get_running_loop()

    def on_message(header: Any, body: Any) -> None:
        waiting.pop(header[1]).set_result(header)

    def on_close(exc: Exception | None) -> None:
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError(f"the echo child went away: {exc}"))

    channel = await open_channel(sock, on_message, on_close)
    cid = 0

    async def one() -> None:
        nonlocal cid
        cid += 1
        fut = loop.create_future()
        waiting[cid] = fut
        channel.send(("call", cid, "add", "call", "pickle", CALL_HEADER_OPTS), ARGS_PAYLOAD)
        await fut

    async def lane(count: int) -> None:
        for _ in range(count):
            await one()

    for _ in range(500):
        await one()
    p0, c0, t0 = cpu_s(me), cpu_s(child), time.perf_counter()
    await asyncio.gather(*(lane(n // inflight) for _ in range(inflight)))
    t1, p1, c1 = time.perf_counter(), cpu_s(me), cpu_s(child)
    done = (n // inflight) * inflight
    channel.close()
    return {
        "round_trip_us": round((t1 - t0) / done * 1e6 * (inflight if inflight > 1 else 1), 2),
        "msgs_per_s": round(done / (t1 - t0)),
        "sender_cpu_us": round((p1 - p0) / done * 1e6, 2),
        "echo_cpu_us": round((c1 - c0) / done * 1e6, 2),
    }


def _run_ipc_once(transport: str, n: int, inflight: int) -> dict[str, float]:
    import psutil

    from runhouse.server.loop import run_loop

    argv = [sys.executable, str(Path(__file__).resolve()), "--ipc-echo"]
    if transport == "socketpair":
        parent, child_end = socket.socketpair()
        proc = subprocess.Popen([*argv, "--fd", str(child_end.fileno())], pass_fds=[child_end.fileno()])
        child_end.close()
        sock = parent
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        proc = subprocess.Popen([*argv, "--port", str(listener.getsockname()[1])])
        listener.settimeout(30)
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.close()
    try:
        child = psutil.Process(proc.pid)
        return run_loop(_ipc_parent(sock, child, n, inflight))
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_ipc(reps: int, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for transport in ("socketpair", "tcp_loopback"):
        for inflight in (1, 64):
            count = n if inflight == 1 else 5 * n  # enough CPU ticks (10 ms each) to count
            runs = [_run_ipc_once(transport, count, inflight) for _ in range(reps)]
            out[f"{transport}_inflight{inflight}"] = {k: spread([r[k] for r in runs]) for k in runs[0]}
    out["messages_per_rep"] = {"inflight1": n, "inflight64": 5 * n}
    return out


# -------------------------------------------------------------------------------------------- Den
def _status(i: int, objects: int = 10) -> dict[str, Any]:
    """A status like ``DaemonState.report_to_den`` sends: a few workers, ``objects`` keys."""
    return {
        "pid": 4242,
        "port": 32300,
        "uptime_s": 86400.0 + i,
        "calls_served": 1_000_000 + i,
        "idle_s": 0.4,
        "workers": ["default_env", "train", "serve"],
        "objects": [f"model_fn_{k}" for k in range(objects)],
    }


def _db_bytes(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _count(db_path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def measure_den(work: Path, reps: int, clusters: int, ops: int) -> dict[str, Any]:
    import httpx
    import psutil
    from denserver import start_den

    data = work / "den"
    den = start_den(data, None, {"RH_HOME": str(work / "den-home")})
    try:
        dproc = psutil.Process(int((data / "pid").read_text()))
        user_token = den.add_user("bench")
        db_path = Path(den.db_url.removeprefix("sqlite:///"))
        daemon_tokens = []
        with den.client(user_token) as http:
            for i in range(clusters):
                cfg = {"resource_type": "cluster", "name": f"c{i}", "host": ["10.0.0.1"], "den_auth": True}
                http.put(f"/v1/resources/bench/c{i}", json={"config": cfg}).raise_for_status()
                reply = http.post(f"/v1/clusters/bench/c{i}/daemon-token")
                reply.raise_for_status()
                daemon_tokens.append(reply.json()["token"])
        clients = [
            httpx.Client(base_url=den.url, headers={"Authorization": f"Bearer {t}"}, timeout=30)
            for t in daemon_tokens
        ]

        def heartbeat(i: int) -> httpx.Response:
            c = i % clusters
            return clients[c].post(f"/v1/clusters/bench/c{c}/heartbeat", json={"status": _status(i)})

        def events(rows: int) -> Any:
            def post(i: int) -> httpx.Response:
                batch = [
                    {
                        "kind": "call",
                        "cluster": f"/bench/c{i % clusters}",
                        "resource": f"model_fn_{k}",
                        "count": 17,
                        "username": "bench",
                    }
                    for k in range(rows)
                ]
                return clients[i % clusters].post("/v1/events", json={"events": batch})

            return post

        def auth_check(i: int) -> httpx.Response:
            c = i % clusters
            return clients[c].post("/v1/auth/check", json={"token": user_token, "resource": f"/bench/c{c}"})

        kinds: dict[str, tuple[Any, int]] = {
            "heartbeat": (heartbeat, 0),
            "events_1": (events(1), 1),
            "events_10": (events(10), 10),
            "events_100": (events(100), 100),
            "auth_check": (auth_check, 0),
        }
        results: dict[str, Any] = {}
        for name, (op, rows) in kinds.items():
            for i in range(20):
                op(i).raise_for_status()
            lat_ms, cpu_ms, per_s, row_bytes = [], [], [], []
            for _ in range(reps):
                size0 = _db_bytes(db_path)
                samples = []
                c0, t0 = cpu_s(dproc), time.perf_counter()
                for i in range(ops):
                    began = time.perf_counter()
                    reply = op(i)
                    samples.append(time.perf_counter() - began)
                    reply.raise_for_status()
                t1, c1 = time.perf_counter(), cpu_s(dproc)
                samples.sort()
                lat_ms.append(round(samples[len(samples) // 2] * 1e3, 3))
                cpu_ms.append(round((c1 - c0) / ops * 1e3, 3))
                per_s.append(round(ops / (t1 - t0), 1))
                if rows:
                    row_bytes.append(round((_db_bytes(db_path) - size0) / (ops * rows), 1))
            results[name] = {
                "p50_ms": spread(lat_ms),
                "den_cpu_ms": spread(cpu_ms),
                "sequential_per_s": spread(per_s),
                "rows_per_request": rows,
            }
            if rows:
                results[name]["db_bytes_per_row"] = spread(row_bytes)
        usage_query = []  # GET /v1/usage scans every row in range: time it at two table sizes
        with den.client(user_token) as http:
            for step in range(2):
                rows_now = _count(db_path, "usage_events")
                timings = []
                for _ in range(3):
                    began = time.perf_counter()
                    http.get("/v1/usage", params={"since": "1d"}).raise_for_status()
                    timings.append(round(time.perf_counter() - began, 3))
                usage_query.append({"rows": rows_now, "seconds": spread(timings)})
                if step == 0:  # as many rows again, in batches of 1,000
                    bulk = events(1000)
                    for i in range(-(-rows_now // 1000)):
                        bulk(i).raise_for_status()
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            hb = conn.execute("SELECT count(*), avg(length(status)) FROM heartbeats").fetchone()
            ev = conn.execute("SELECT count(*) FROM usage_events").fetchone()[0]
        for c in clients:
            c.close()
        return {
            "backend": "sqlite",
            "clusters": clusters,
            "requests_per_rep": ops,
            "kinds": results,
            "heartbeat_rows": hb[0],
            "heartbeat_status_bytes": round(hb[1] or 0, 1),
            "usage_rows": ev,
            "db_bytes_total": _db_bytes(db_path),
            "usage_query": usage_query,
            "den_rss_mb": round(dproc.memory_info().rss / MB, 1),
        }
    finally:
        den.stop()


# ----------------------------------------------------------------------------------------- report
def _fmt(s: dict[str, Any], unit: str = "", digits: int = 1) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def markdown(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if "routing" in r:
        seq, conc = r["routing"]["sequential"], r["routing"]["concurrent_64"]
        rows += [
            ("daemon CPU per routed call, sequential", _fmt(seq["daemon_us"], " us")),
            ("worker CPU per call, sequential", _fmt(seq["worker_us"], " us")),
            ("wall time per call, sequential (raw HTTP)", _fmt(seq["wall_us"], " us")),
            ("daemon CPU per routed call, wrk -c64", _fmt(conc["daemon_us"], " us")),
            ("worker CPU per call, wrk -c64", _fmt(conc["worker_us"], " us")),
            ("calls/s, wrk -c64 (client on the same 2 cores)", _fmt(conc["calls_per_s"], "", 0)),
            ("daemon CPU busy fraction under wrk -c64", _fmt(conc["daemon_busy"], "", 2)),
            (
                "=> calls/s one daemon core can route (1 / CPU per call, -c64)",
                f"{1e6 / conc['daemon_us']['median']:.0f} "
                f"({1e6 / conc['daemon_us']['max']:.0f}-{1e6 / conc['daemon_us']['min']:.0f})",
            ),
        ]
    if "connections" in r:
        c = r["connections"]
        again = c["bytes_per_conn_reopened"]
        rows.append(
            (
                f"daemon RSS per idle keep-alive connection ({c['connections']} open; first round)",
                f"{c['bytes_per_conn_first']:.0f} B"
                + (f" (reopened: {_fmt(again, ' B', 0)})" if again else ""),
            )
        )
    if "workers" in r:
        w = r["workers"]
        rows += [
            (
                f"daemon RSS per worker ({w['new_worker_processes']} new envs): started / after wrk -c16 on each",
                f"{w['daemon_rss_per_worker_kb']} / {w['daemon_rss_per_worker_after_load_kb']} KiB",
            ),
            ("worker RSS (each)", _fmt(w["worker_rss_mb"], " MiB")),
            ("worker USS (memory only it holds)", _fmt(w["worker_uss_mb"], " MiB")),
            ("new env + deploy + first call (shared Python)", f"{w['seconds_per_env_to_first_call']} s"),
            (
                f"daemon idle CPU with {w['new_worker_processes'] + 1} workers",
                f"{w['daemon_idle_cpu_pct']} %",
            ),
        ]
    if "ipc" in r:
        for key, label in (
            ("socketpair_inflight1", "IPC socketpair, 1 in flight"),
            ("socketpair_inflight64", "IPC socketpair, 64 in flight"),
            ("tcp_loopback_inflight1", "IPC over TCP loopback, 1 in flight"),
            ("tcp_loopback_inflight64", "IPC over TCP loopback, 64 in flight"),
        ):
            x = r["ipc"][key]
            rows.append(
                (
                    f"{label}: round trip / sender CPU / echo CPU per message",
                    f"{_fmt(x['round_trip_us'], ' us')} / {_fmt(x['sender_cpu_us'], ' us')} / "
                    f"{_fmt(x['echo_cpu_us'], ' us')}",
                )
            )
    if "den" in r:
        for name, k in r["den"]["kinds"].items():
            extra = f", {_fmt(k['db_bytes_per_row'], ' B/row', 0)}" if "db_bytes_per_row" in k else ""
            rows.append(
                (
                    f"Den {name}: p50 / Den CPU per request / sequential req/s",
                    f"{_fmt(k['p50_ms'], ' ms', 2)} / {_fmt(k['den_cpu_ms'], ' ms', 2)} / "
                    f"{_fmt(k['sequential_per_s'], '', 0)}{extra}",
                )
            )
        rows.append(("Den heartbeat status size (stored JSON)", f"{r['den']['heartbeat_status_bytes']} B"))
        for q in r["den"]["usage_query"]:
            rows.append(
                (f"Den GET /v1/usage?since=1d over {q['rows']:,} usage rows", _fmt(q["seconds"], " s", 3))
            )
    lines = ["| measure | median (min-max over reps) |", "| --- | ---: |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def meta() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "runhouse"], cwd=REPO, capture_output=True, text=True
    )
    return {
        "commit": commit.stdout.strip(),
        "runhouse_uncommitted": dirty.stdout.split("\n")[:-1],  # this run measured these edits too
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "when_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


PARTS = ("routing", "connections", "workers", "ipc", "den")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter reps (a smoke run)")
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions of each part (default 5, quick 2)"
    )
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    parser.add_argument("--ipc-echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ipc_echo:
        from runhouse.server.loop import run_loop

        run_loop(_echo_child(args.fd, args.port))
        return 0

    reps = args.reps or (2 if args.quick else 5)
    calls = 1000 if args.quick else 5000
    wrk_s = 2 if args.quick else 5
    ipc_n = 5000 if args.quick else 20000
    den_ops = 50 if args.quick else 200
    parts = args.only or list(PARTS)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {"meta": meta(), "reps": reps}
    work = Path(tempfile.mkdtemp(prefix="rh-scale-"))
    os.environ["RH_HOME"] = str(work / "client-home")
    from bench.servers import Daemon, free_port

    try:
        with contextlib.ExitStack() as stack:
            if {"routing", "connections", "workers"} & set(parts):
                log("starting a daemon with `runhouse start`")
                daemon = Daemon.start(work / "rh-home", free_port())
                stack.callback(daemon.stop)
                import runhouse as rh
                from bench._funcs import add

                rh.function(add).to(daemon.cluster())
                if "routing" in parts:
                    log(f"routing: {reps} x {calls} sequential calls, {reps} x wrk -c64 -d{wrk_s}s")
                    results["routing"] = measure_routing(daemon, work, reps, calls, wrk_s)
                if "workers" in parts:
                    log(f"workers: {args.envs} envs")
                    results["workers"] = measure_workers(daemon, work, args.envs)
                if "connections" in parts:
                    log(f"connections: {reps} x {args.conns} idle keep-alive connections")
                    results["connections"] = measure_connections(daemon, reps, args.conns)
            if "ipc" in parts:
                log(f"ipc: {reps} x {ipc_n} messages per transport and depth")
                results["ipc"] = measure_ipc(reps, ipc_n)
            if "den" in parts:
                log(f"den: {args.clusters} clusters, {reps} x {den_ops} requests per kind")
                results["den"] = measure_den(work, reps, args.clusters, den_ops)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    results["meta"]["loadavg_end"] = os.getloadavg()
    print(markdown(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nJSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
