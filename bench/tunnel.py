#!/usr/bin/env python
"""The SSH tunnel's cost (issue 12, "Through the SSH tunnel"): ``python bench/tunnel.py`` (as root).

One test host (``tests/compute/sshlab.py``: a network namespace with its own sshd) runs three
daemons: one reached through the tunnel (connection type ``ssh``, the default), one listening on
the host's address (``none``), which this process reaches straight over the same virtual link, and
one serving HTTPS there (``tls``). Four clients call them in the same run, in interleaved rounds so
that drift hits all alike:

* ``direct``: plain HTTP to the ``none`` daemon (the baseline);
* ``openssh``: through the cluster's tunnel, the ``ssh -N -L`` process (``compute/forward.py``);
* ``asyncssh``: through asyncssh's forward to the same daemon (what the tunnel was before);
* ``tls``: HTTPS to a third daemon listening on the host's address (connection type ``tls``), the
  other way to encrypt, for comparison.

Measured: a trivial call's p50/p99 on each (the overhead is tunnel p50 minus direct p50; goal at
most 0.3 ms), and the round trip of a 100 MB numpy array (MB/s = 100 MB / seconds, median of
``--reps``, each timed right after an untimed one on the same path; goal at least 300 MB/s
through the tunnel). To tell the tunnel's own ceiling from the
daemon's, the same 100 MB also go there and back as bare bytes to an echo server on the host
(directly, through an OpenSSH tunnel, through asyncssh's forward), no HTTP, no pickle. The test host shares this machine's
``/dev/shm``, so same-host shared memory is switched off in these clients: on a real remote host
the bytes cross the tunnel, and here they must too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "compute")]

SIZE_BYTES = 100_000_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _latency(clients: dict[str, Any], calls: int, rounds: int) -> dict[str, list[float]]:
    from runhouse.protocol.wire import CallOptions

    options = CallOptions()
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for client in clients.values():  # warm: connections, the worker's fast-call promotion
        for _ in range(200):
            client.call("add", "call", (1, 2), {}, options)
    for _ in range(rounds):
        for name, client in clients.items():
            out = samples[name]
            for _ in range(calls // rounds):
                began = time.perf_counter()
                client.call("add", "call", (1, 2), {}, options)
                out.append(time.perf_counter() - began)
    return samples


def _round_trips(clients: dict[str, Any], reps: int) -> dict[str, list[float]]:
    import numpy as np

    from runhouse.protocol.wire import CallOptions

    options = CallOptions()
    array = np.random.default_rng(0).random(SIZE_BYTES // 8)
    seconds: dict[str, list[float]] = {name: [] for name in clients}
    for client in clients.values():
        back = client.call("identity", "call", (array,), {}, options)  # untimed: imports numpy there
        if not np.array_equal(back, array):
            raise RuntimeError("the array did not come back unchanged")
    for _ in range(reps):
        for name, client in clients.items():
            # Each timed call follows one untimed call on the same path, as in a stream of large
            # calls: the daemons keep the pages of recent large bodies for reuse only while large
            # bodies keep coming (protocol/buffers.py, 2 s), and one round of the other three
            # clients takes longer than that.
            client.call("identity", "call", (array,), {}, options)
            began = time.perf_counter()
            client.call("identity", "call", (array,), {}, options)
            seconds[name].append(time.perf_counter() - began)
    return seconds


# Bytes only, no daemon: receives a length-prefixed body into one buffer and sends it back whole.
ECHO_SERVER = """
import socket, sys, threading
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); buf = None
    while len(head := c.recv(8, socket.MSG_WAITALL)) == 8:
        n = int.from_bytes(head, "big"); buf = buf if buf is not None and len(buf) == n else bytearray(n)
        view, got = memoryview(buf), 0
        while got < n: got += c.recv_into(view[got:])
        c.sendall(buf)
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); print("up", flush=True)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


def _raw_round_trips(ports: dict[str, tuple[str, int]], reps: int) -> dict[str, list[float]]:
    """100 MB there and back on a plain socket to the echo server, through each path."""
    import socket

    data = os.urandom(SIZE_BYTES)
    back = bytearray(SIZE_BYTES)
    socks = {}
    for name, address in ports.items():
        socks[name] = socket.create_connection(address)
        socks[name].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seconds: dict[str, list[float]] = {name: [] for name in ports}
    for rep in range(reps + 1):  # the first is untimed
        for name, sock in socks.items():
            began = time.perf_counter()
            sock.sendall(len(data).to_bytes(8, "big"))
            sock.sendall(data)
            view, got = memoryview(back), 0
            while got < SIZE_BYTES:
                got += sock.recv_into(view[got:])
            if rep:
                seconds[name].append(time.perf_counter() - began)
    for sock in socks.values():
        sock.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="timed trivial calls per client")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds the calls are split into")
    parser.add_argument("--reps", type=int, default=5, help="timed 100 MB round trips per client")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    args = parser.parse_args()
    os.environ["RH_HOME"] = tempfile.mkdtemp(prefix="rh-bench-tunnel-")
    import sshhosts
    import sshlab

    reason = sshhosts.skip_reason(sshlab.PREREQUISITES)
    if reason:
        sys.exit(f"cannot make test hosts here: {reason}")
    import runhouse as rh
    from bench._funcs import add, identity
    from bench.stats import median, summarize
    from runhouse.client.daemon_client import DaemonClient
    from runhouse.client.transport import Endpoint

    with sshlab.lab(n=1, index_extra=["numpy"]) as (hosts, _):
        address = hosts.hosts[0].address
        creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
        numpy = rh.env(reqs=["numpy"])  # from the index the lab serves the host
        tunnelled = rh.cluster(
            name="t-ssh", host=[address], ssh_creds=creds, server_port=_free_port(), default_env=numpy
        ).up()
        direct = rh.cluster(
            name="t-none",
            host=[address],
            ssh_creds=creds,
            server_port=_free_port(),
            server_connection_type="none",
            default_env=numpy,
        ).up_if_not()
        tls = rh.cluster(
            name="t-tls",
            host=[address],
            ssh_creds=creds,
            server_port=_free_port(),
            server_connection_type="tls",
            default_env=numpy,
        ).up_if_not()
        for cluster in (tunnelled, direct, tls):
            rh.function(add).to(cluster, name="add")
            rh.function(identity).to(cluster, name="identity")
        remote = tunnelled._remote
        session = remote.session
        tunnel = session.tunnel(remote.port)
        if tunnel is None or tunnel.kind != "openssh":
            sys.exit(f"the cluster's tunnel is not an ssh process: {tunnel and tunnel.kind}")
        async_port, async_listener = session._asyncssh_forward(0, remote.port)
        token = remote.token()
        clients = {
            "direct": DaemonClient(direct._remote.endpoint(), direct._remote.token()),
            "openssh": DaemonClient(Endpoint("127.0.0.1", tunnel.local_port), token),
            "asyncssh": DaemonClient(Endpoint("127.0.0.1", async_port), token),
            "tls": DaemonClient(tls._remote.endpoint(), tls._remote.token()),
        }
        for client in clients.values():
            client._shm_state = None  # the bytes must cross the tunnel (see the docstring)
        echo_port = _free_port()
        echo = subprocess.Popen(
            ["ip", "netns", "exec", hosts.hosts[0].netns, sys.executable, "-c", ECHO_SERVER, str(echo_port)],
            stdout=subprocess.PIPE,
        )
        try:
            assert echo.stdout is not None and echo.stdout.readline() == b"up\n"
            raw_async_port, raw_async = session._asyncssh_forward(0, echo_port)
            raw_ports = {
                "direct": (address, echo_port),
                "openssh": ("127.0.0.1", session.forward(echo_port)),
                "asyncssh": ("127.0.0.1", raw_async_port),
            }
            latency = {name: summarize(s) for name, s in _latency(clients, args.calls, args.rounds).items()}
            trips = _round_trips(clients, args.reps)
            raw = _raw_round_trips(raw_ports, args.reps)
            raw_async.close()
            session.close_forward(echo_port)
        finally:
            echo.kill()
            echo.wait()
            for client in clients.values():
                client.close()
            async_listener.close()
            for cluster in (direct, tls, tunnelled):
                cluster.teardown()
    mb = SIZE_BYTES / 1e6
    rates = {name: mb / median(s) for name, s in trips.items()}
    base = latency["direct"]["p50_ms"]
    raw_rates = {name: mb / median(s) for name, s in raw.items()}
    print(
        "| path | trivial call p50 / p99 (ms) | overhead vs direct at p50 (ms) | 100 MB round trip (MB/s) "
        "| bytes only: 100 MB there and back (MB/s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, label in (
        ("direct", "direct HTTP to the host (`none`)"),
        ("openssh", "SSH tunnel: `ssh -N -L` process (now)"),
        ("asyncssh", "SSH tunnel: asyncssh forward (before)"),
        ("tls", "HTTPS straight to the host (`tls`, for comparison)"),
    ):
        row = latency[name]
        print(
            f"| {label} | {row['p50_ms']:.3f} / {row['p99_ms']:.3f} | "
            f"{row['p50_ms'] - base:+.3f} | {rates[name]:.0f} | "
            f"{f'{raw_rates[name]:.0f}' if name in raw_rates else '-'} |"
        )
    overhead = latency["openssh"]["p50_ms"] - base
    print(
        f"\ngoals: tunnel overhead {overhead:.3f} ms (<= 0.3: {'met' if overhead <= 0.3 else 'NOT met'}); "
        f"100 MB through the tunnel {rates['openssh']:.0f} MB/s "
        f"(>= 300: {'met' if rates['openssh'] >= 300 else 'NOT met'})"
    )
    if args.json:
        print(json.dumps({"latency": latency, "round_trip_s": trips, "bytes_only_s": raw}, indent=1))


if __name__ == "__main__":
    main()
