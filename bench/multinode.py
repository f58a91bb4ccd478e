#!/usr/bin/env python
"""Multi-node call speed (issue 12): ``python bench/multinode.py [--calls N] [--mb M]`` (as root).

Three test hosts (``tests/sshhosts.py`` network namespaces, set up as ``tests/compute/sshlab.py``
does, with Ray and numpy in their package index) make one cluster, ``rh.cluster(host=[h0, h1,
h2])``: the head's daemon, Ray across the three. Two envs with numpy: ``same`` on the head (a local
worker, socketpair) and ``remote`` placed on the second host (``compute={"node_idx": 1}``: a
worker Ray started there, connected to the daemon over TCP). In one run, measured:

* from this machine, through the SSH tunnel (the default connection): a trivial call's p50 to
  each env, interleaved in blocks;
* from the head (a driver running in the head's worker, talking to the daemon on 127.0.0.1, as a
  Ray driver on the head talks to Ray): the same, plus Ray actors on the second host and on the
  head called from the head (``ray.get(actor.ping.remote(1))``), and a ``--mb`` MB numpy array's
  round trip (sent to the worker and returned) to each env and to each Ray actor (on the head,
  Ray passes it through its same-node object store).

The hosts share this machine, so "another node" means another network namespace: a real TCP
connection through two veths and the kernel's routing, but no NIC; absolute numbers are this
machine's, ratios are the point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MB = 1 << 20


# -- run on the cluster (imported there by path) -----------------------------------------------------
def ping(x: Any) -> Any:
    return x


def tcp_echo_server() -> int:
    """On a node: a thread echoing each connection's length-prefixed payload back; returns its port
    (the raw-TCP baseline: what two sockets between the nodes move, with nothing of ours)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()

    def read(conn: socket.socket, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            got += conn.recv_into(view[got:])
        return buf

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(read(conn, int.from_bytes(read(conn, 8), "big")))

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


def _raw_round_trip(address: tuple[str, int], data: Any) -> None:
    import socket

    view = memoryview(data).cast("B")
    with socket.create_connection(address) as conn:
        conn.sendall(len(view).to_bytes(8, "big"))
        conn.sendall(view)
        buf = bytearray(len(view))
        back, got = memoryview(buf), 0
        while got < len(buf):
            got += conn.recv_into(back[got:])


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _time(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def from_head(
    keys: list[str], node_ip: str, head_ip: str, echo_port: int, calls: int, mb: int, rounds: int
) -> dict[str, Any]:
    """On the head: our calls to each key through the daemon on 127.0.0.1, and Ray actors on
    ``node_ip`` and on the head (``head_ip``) called from here; p50 of trivial calls and seconds
    per ``mb`` MB round trip."""
    import numpy as np
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import runhouse as rh

    here = rh.here
    assert here is not None
    stubs = {key: rh.function(name=key, system=here) for key in keys}
    array = np.random.default_rng(0).random(mb * MB // 8)
    out: dict[str, Any] = {}

    ray.init(address=os.environ["RH_RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
    try:

        @ray.remote
        class Echo:
            def ping(self, x: Any) -> Any:
                return x

        def actor_on(ip: str) -> Any:
            node = next(n for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == ip)
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            actor = Echo.options(num_cpus=0, scheduling_strategy=strategy).remote()
            ray.get(actor.ping.remote(1))
            return actor

        actor, head_actor = actor_on(node_ip), actor_on(head_ip)
        calls_of = {key: (lambda s=stub: s(1)) for key, stub in stubs.items()}
        calls_of["ray_actor"] = lambda: ray.get(actor.ping.remote(1))
        calls_of["ray_actor_head"] = lambda: ray.get(head_actor.ping.remote(1))
        samples: dict[str, list[float]] = {k: [] for k in calls_of}
        for fn in calls_of.values():
            _time(fn, 200)  # warm
        block = max(1, calls // 10)
        for _ in range(10):  # interleaved blocks: drift hits every row alike
            for key, fn in calls_of.items():
                samples[key] += _time(fn, block)
        out["p50_ms"] = {k: _p50_ms(v) for k, v in samples.items()}

        def big(fn: Any) -> float:
            back = fn(array)
            assert back.shape == array.shape
            return min(_time(lambda: fn(array), rounds))

        out["round_trip_s"] = {key: big(stub) for key, stub in stubs.items()}
        out["round_trip_s"]["ray_actor"] = big(lambda a: ray.get(actor.ping.remote(a)))
        out["round_trip_s"]["ray_actor_head"] = big(lambda a: ray.get(head_actor.ping.remote(a)))
        _raw_round_trip((node_ip, echo_port), array)
        out["round_trip_s"]["raw_tcp"] = min(
            _time(lambda: _raw_round_trip((node_ip, echo_port), array), rounds)
        )
    finally:
        ray.shutdown()
    return out


# -- run here --------------------------------------------------------------------------------------
def _client_p50(stubs: dict[str, Any], calls: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in stubs}
    for stub in stubs.values():
        _time(lambda s=stub: s(1), 200)
    block = max(1, calls // 10)
    for _ in range(10):
        for key, stub in stubs.items():
            samples[key] += _time(lambda s=stub: s(1), block)
    return {k: _p50_ms(v) for k, v in samples.items()}


def _actor_rss_mib() -> list[float]:
    """RSS of the NodeWorker actors' Ray worker processes (the hosts share this pid namespace)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any("NodeWorker" in part for part in proc.info["cmdline"] or []):
            with __import__("contextlib").suppress(psutil.Error):
                found.append(proc.memory_info().rss / MB)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "compute")]
    os.environ["RH_HOME"] = tempfile.mkdtemp(prefix="rh-bench-multinode-")
    import sshhosts
    import sshlab

    reason = sshhosts.skip_reason(sshlab.PREREQUISITES)
    if reason:
        sys.exit(f"cannot make test hosts here: {reason}")
    import runhouse as rh
    from bench import multinode
    from runhouse.compute import raycluster
    from runhouse.compute.raynodes import RAY_REQUIREMENT, RayOptions

    raycluster.RAY_OPTIONS = RayOptions(num_cpus=2, object_store_memory=600 * MB)
    with sshlab.lab(n=3, index_extra=(RAY_REQUIREMENT, "numpy")) as (hosts, _):
        hosts.route_between_hosts()
        creds = {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cluster = rh.cluster(
            name="b-multi", host=[h.address for h in hosts.hosts], ssh_creds=creds, server_port=port
        )
        cluster.up()
        try:
            envs = {
                "same": rh.env(name="same", reqs=["numpy"]),
                "remote": rh.env(name="remote", reqs=["numpy"], compute={"node_idx": 1}),
            }
            stubs = {
                k: rh.function(multinode.ping, name=f"ping_{k}").to(cluster, env=e) for k, e in envs.items()
            }
            client = _client_p50(stubs, args.calls)
            actor_rss = _actor_rss_mib()
            echo_port = rh.function(multinode.tcp_echo_server).to(cluster, env=envs["remote"])()
            head = rh.function(multinode.from_head).to(cluster, env="same")(
                [f"ping_{k}" for k in envs],
                hosts.hosts[1].address,
                hosts.hosts[0].address,
                echo_port,
                args.calls,
                args.mb,
                args.rounds,
            )
        finally:
            cluster.teardown()
    p50, trip = head["p50_ms"], head["round_trip_s"]
    print("| measure | value |")
    print("| --- | ---: |")
    print(
        f"| trivial call p50 from this machine (SSH tunnel): same node / other node | {client['same']:.3f} / {client['remote']:.3f} ms |"
    )
    print(f"| other node / same node, from this machine | {client['remote'] / client['same']:.2f}x |")
    print(
        f"| trivial call p50 from the head: same node / other node / Ray actor on the other node / Ray actor on the head | "
        f"{p50['ping_same']:.3f} / {p50['ping_remote']:.3f} / {p50['ray_actor']:.3f} / {p50['ray_actor_head']:.3f} ms |"
    )
    print(f"| other node / same node, from the head | {p50['ping_remote'] / p50['ping_same']:.2f}x |")
    print(
        f"| other node (ours) / Ray actor on the other node, from the head | {p50['ping_remote'] / p50['ray_actor']:.2f}x |"
    )
    print(
        f"| {args.mb} MB round trip, other node: ours / raw TCP between the same nodes | "
        f"{trip['ping_remote'] / trip['raw_tcp']:.2f}x the time |"
    )
    print(
        f"| {args.mb} MB round trip, same node: ours / Ray actor on the head (its object store) | "
        f"{trip['ping_same'] / trip['ray_actor_head']:.2f}x the time |"
    )
    if actor_rss:
        print(f"| RSS of a NodeWorker actor's Ray worker process | {statistics.median(actor_rss):.0f} MiB |")
    for key, label in (
        ("ping_same", "same node"),
        ("ping_remote", "other node"),
        ("ray_actor", "Ray actor, other node"),
        ("ray_actor_head", "Ray actor, same node (the head)"),
        ("raw_tcp", "raw TCP echo on the other node (no serialization, no daemon)"),
    ):
        seconds = trip[key]
        print(
            f"| {args.mb} MB numpy round trip from the head, {label}: best of {args.rounds} | "
            f"{seconds:.3f} s ({args.mb / seconds:.0f} MB/s: size / round trip) |"
        )


if __name__ == "__main__":
    main()
