"""Workers on other nodes of a multi-node cluster: placed by Ray, reached over our own TCP channel.

An env with ``compute=`` (``{"CPU": 2, "GPU": 1, "memory": bytes, "node_idx": 1, "<custom>": n}``)
on a multi-node cluster gets a :class:`PlacedWorker` instead of a local process:

1. The daemon's :class:`RayPlacer` (Ray imported and ``ray.init`` run on first use, in a thread of
   its own, so one-node daemons never import Ray) checks the request against every alive node's
   resources and fails at once, naming what is missing and what each node has, when no node could
   ever hold it. Otherwise it creates a :class:`~runhouse.server.nodeworker.NodeWorker` actor with
   those resources (``node_idx`` becomes a hard node-affinity to the cluster's host at that index)
   and waits :data:`PLACE_TIMEOUT_S` for Ray to place it (resources held by others fail the same
   way, with what is free).
2. The actor builds the env on its node and starts our ordinary worker process there, which
   connects back to the daemon's :class:`WorkerListener`, on the head's cluster address. It must
   first send :data:`~runhouse.protocol.ipc.PREAMBLE`: a worker id and a 32-byte secret made for
   that worker alone, compared in constant time. Anything else is closed before a single byte of
   it is unpickled (channel headers are pickles: only an authenticated worker may send them).
3. The authenticated socket becomes the worker's :class:`~runhouse.protocol.ipc.Channel`, exactly
   like a local worker's socketpair: calls keep streaming output, typed exceptions, generators,
   async methods, cancellation and timeouts, and the data path never goes through Ray.
   :func:`~runhouse.protocol.ipc.tune_tcp` ends a connection whose peer went silent for 3 s, so
   when a node dies or is cut off its calls fail with ``WorkerDied`` naming the node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runhouse.exceptions import BadRequest, EnvSetupError, WorkerDied
from runhouse.protocol.arena import outbox, read_segment
from runhouse.protocol.ipc import MAGIC, PREAMBLE, tune_tcp
from runhouse.protocol.messages import Call, cid_of
from runhouse.protocol.serialization import OOB_MAGIC, SHM_MIN_BYTES
from runhouse.protocol.shm import shm_dir
from runhouse.server.nodeworker import NodeWorker, probe_node
from runhouse.server.workers import Build, PendingCall, WorkerHandle

log = logging.getLogger("runhouse.daemon")

PLACE_TIMEOUT_S = 20.0  # how long Ray may take to find room for a placed worker before .to() fails
BUILD_TIMEOUT_S = 1800.0  # the env's packages and setup commands on the node
CONNECT_TIMEOUT_S = 60.0  # from the worker process's start to its authenticated connection
AUTH_TIMEOUT_S = 5.0  # an accepted connection must introduce itself within this
PROBE_TIMEOUT_S = 5.0  # a node's status probe (hostname, nvidia-smi)
_LAYOUT_LEN = struct.Struct(">I")  # serialization's layout length prefix, after OOB_MAGIC
_STANDARD = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


def check_compute(compute: Any) -> dict[str, float]:
    """A ``compute=`` from a client, checked: resource names to amounts, ``node_idx`` an index."""
    if not isinstance(compute, dict):
        raise BadRequest(f"'compute' must map resource names to amounts, got {compute!r}", 400)
    for key, value in compute.items():
        if (
            not isinstance(key, str)
            or not key
            or isinstance(value, bool)
            or not isinstance(value, int | float)
        ):
            raise BadRequest(f"'compute' must map resource names to amounts, got {key!r}: {value!r}", 400)
        if value < 0 or (key == "node_idx" and not isinstance(value, int)):
            raise BadRequest(f"compute[{key!r}] must be a number of at least 0 (node_idx an integer)", 400)
    return dict(compute)


# -- the worker listener -----------------------------------------------------------------------------
class WorkerListener:
    """A TCP listener on the head's cluster address for workers on other nodes (see step 2)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.refused = 0  # connections closed without authenticating (status, tests)
        self._sock: socket.socket | None = None
        self._expected: dict[bytes, tuple[bytes, asyncio.Future[socket.socket]]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def open(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(256)
        sock.setblocking(False)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._task = asyncio.get_running_loop().create_task(self._accept())
        log.info("listening for workers on other nodes at %s", self.address)

    def expect(self) -> tuple[bytes, bytes, asyncio.Future[socket.socket]]:
        """A new worker's id and secret, and the future its authenticated socket arrives on."""
        wid, secret = secrets.token_bytes(16), secrets.token_bytes(32)
        accepted: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()
        self._expected[wid] = (secret, accepted)
        return wid, secret, accepted

    def forget(self, wid: bytes) -> None:
        self._expected.pop(wid, None)

    async def _accept(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as e:  # out of descriptors and the like: keep serving
                log.warning("worker listener: accept failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            loop.create_task(self._admit(conn, peer))

    async def _admit(self, conn: socket.socket, peer: Any) -> None:
        """Read exactly the preamble (raw bytes, never unpickled) and hand the socket to the worker
        it names if its secret matches; close it otherwise."""
        conn.setblocking(False)
        loop = asyncio.get_running_loop()
        raw = bytearray(PREAMBLE.size)

        async def read() -> int:
            view, have = memoryview(raw), 0
            while have < PREAMBLE.size:
                n = await loop.sock_recv_into(conn, view[have:])
                if n == 0:
                    break
                have += n
            return have

        try:
            have = await asyncio.wait_for(read(), AUTH_TIMEOUT_S)
        except (asyncio.TimeoutError, OSError):
            have = 0
        if have == PREAMBLE.size:
            magic, wid, secret = PREAMBLE.unpack(raw)
            expected = self._expected.get(wid) if magic == MAGIC else None
            if expected is not None and hmac.compare_digest(expected[0], secret) and not expected[1].done():
                del self._expected[wid]
                tune_tcp(conn)
                expected[1].set_result(conn)
                return
        self.refused += 1
        log.warning("worker listener: closed a connection from %s that did not authenticate", peer)
        conn.close()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._sock is not None:
            self._sock.close()
        for _secret, accepted in self._expected.values():
            if not accepted.done():
                accepted.cancel()
        self._expected.clear()


# -- Ray ---------------------------------------------------------------------------------------------
class RayPlacer:
    """The daemon's Ray driver. Every Ray call runs in its own threads (they block)."""

    def __init__(self, address: str, hosts: Callable[[], list[str]]) -> None:
        self.address = address
        self._hosts = hosts  # the cluster's host list, head first (node_idx indexes it)
        self._pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="rh-ray")
        self._ray: Any = None
        self._init_lock = threading.Lock()  # concurrent first placements would each run ray.init

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def ray(self) -> Any:
        if self._ray is not None:
            return self._ray
        with self._init_lock:
            if self._ray is not None:
                return self._ray
            import ray

            if not ray.is_initialized():
                ray.init(
                    address=self.address,
                    namespace="runhouse",
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                    configure_logging=False,
                )
            self._ray = ray
        return self._ray

    def alive_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray().nodes() if n.get("Alive")]

    # -- placing -----------------------------------------------------------------------------------
    def place(self, env: str, compute: dict[str, float]) -> tuple[Any, dict[str, Any]]:
        """A NodeWorker actor for ``env`` that Ray placed; returns it and the node it is on."""
        ray = self.ray()
        nodes = self.alive_nodes()
        target = self._target_node(compute, nodes)
        asked = {k: float(v) for k, v in compute.items() if k != "node_idx"}
        candidates = [target] if target is not None else nodes
        if not any(_fits(asked, n.get("Resources") or {}) for n in candidates):
            raise BadRequest(
                f"no node of the cluster can hold env {env!r}'s compute={compute}: {_missing(asked, candidates)}. "
                f"The nodes have: {_describe_nodes(nodes)}",
                422,
            )
        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 4}
        custom = {}
        for key, amount in asked.items():
            if key in _STANDARD:
                options[_STANDARD[key]] = int(amount) if key == "memory" else amount
            else:
                custom[key] = amount
        if custom:
            options["resources"] = custom
        if target is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(target["NodeID"], soft=False)
        actor = ray.remote(NodeWorker).options(**options).remote()
        try:
            where = ray.get(actor.ready.remote(), timeout=PLACE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            ray.kill(actor)
            free = ray.available_resources()
            raise BadRequest(
                f"no node had room for env {env!r}'s compute={compute} within {PLACE_TIMEOUT_S:g} s "
                f"(other workers hold it). Free now across the cluster: {_amounts(free)}; "
                f"the nodes have: {_describe_nodes(nodes)}",
                422,
            ) from None
        return actor, {**where, "node": _node_address(nodes, where)}

    def _target_node(self, compute: dict[str, float], nodes: list[dict[str, Any]]) -> dict[str, Any] | None:
        if "node_idx" not in compute:
            return None
        index = int(compute["node_idx"])
        hosts = self._hosts()
        if not 0 <= index < len(hosts):
            raise BadRequest(
                f"compute['node_idx']={index} is not a host of this cluster: it has {len(hosts)} "
                f"({', '.join(hosts)}), node_idx 0 to {len(hosts) - 1}",
                422,
            )
        # A node that died and joined again is listed twice until Ray's health checks declare the
        # old entry dead (tens of seconds): place on the one whose raylet answers.
        listed = [n for n in nodes if n.get("NodeManagerAddress") == hosts[index]]
        if listed:
            return _answering(listed)
        raise BadRequest(
            f"compute['node_idx']={index} is host {hosts[index]}, which is not an alive node of the "
            f"cluster's Ray (alive: {', '.join(n['NodeManagerAddress'] for n in nodes) or 'none'}); "
            "cluster.up() brings missing nodes back",
            422,
        )

    def start(self, actor: Any, spec: dict[str, Any]) -> dict[str, Any]:
        ray = self.ray()
        return dict(ray.get(actor.start.remote(spec), timeout=BUILD_TIMEOUT_S))

    def exit_code(self, actor: Any) -> tuple[bool, int | None]:
        """(whether the actor answered, the worker's exit code) within a second or two."""
        ray = self.ray()
        try:
            return True, ray.get(actor.exit_code.remote(), timeout=2.0)
        except Exception:  # noqa: BLE001 - the actor or its node is gone: that is the answer
            return False, None

    def log_tail(self, actor: Any) -> str:
        try:
            return str(self.ray().get(actor.log_tail.remote(), timeout=5.0))
        except Exception:  # noqa: BLE001 - best effort, for an error message
            return ""

    def kill(self, actor: Any, graceful: bool = True) -> None:
        """Stop the worker (``graceful``: asking the actor first) and the actor, freeing its resources."""
        ray = self.ray()
        if graceful:  # the node may be gone: the kill below frees its resources all the same
            with contextlib.suppress(Exception):
                ray.get(actor.stop.remote(), timeout=10.0)
        with contextlib.suppress(Exception):  # already dead
            ray.kill(actor)

    # -- status ------------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """Every node Ray knows, with what ``probe_node`` finds on the alive ones."""
        ray = self.ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        found = ray.nodes()
        probe = ray.remote(probe_node)
        refs = {
            n["NodeID"]: probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote()
            for n in found
            if n.get("Alive")
        }
        out = []
        for node in found:
            resources = node.get("Resources") or {}
            info: dict[str, Any] = {
                "address": node.get("NodeManagerAddress"),
                "node_id": node.get("NodeID"),
                "alive": bool(node.get("Alive")),
                "is_head": "node:__internal_head__" in resources,
                "cpus": resources.get("CPU", 0.0),
                "gpus": resources.get("GPU", 0.0),
                "memory": int(resources.get("memory", 0.0)),
                "resources": resources,
            }
            ref = refs.get(node["NodeID"])
            if ref is not None:
                try:
                    info.update(ray.get(ref, timeout=PROBE_TIMEOUT_S))
                except Exception as e:  # noqa: BLE001 - shown, not raised: status must answer
                    info["probe_error"] = f"{type(e).__name__}: {e}"[:300]
            out.append(info)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _fits(asked: dict[str, float], has: dict[str, float]) -> bool:
    return all(has.get(k, 0.0) >= v for k, v in asked.items())


def _missing(asked: dict[str, float], nodes: list[dict[str, Any]]) -> str:
    parts = []
    for key, amount in asked.items():
        most = max(((n.get("Resources") or {}).get(key, 0.0) for n in nodes), default=0.0)
        if most < amount:
            what = "no node has any" if most == 0 else f"the most any node has is {_amount(key, most)}"
            parts.append(f"{key} {_amount(key, amount)} asked, {what}")
    return "; ".join(parts) or "no single node has all of it at once"


def _amount(key: str, value: float) -> str:
    if key == "memory" or key == "object_store_memory":
        return f"{value / 2**30:.2f} GiB"
    return f"{value:g}"


def _amounts(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if not k.startswith("node:") and k != "object_store_memory"}
    return ", ".join(f"{k} {_amount(k, v)}" for k, v in sorted(shown.items())) or "nothing"


def _describe_nodes(nodes: list[dict[str, Any]]) -> str:
    return "; ".join(f"{n.get('NodeManagerAddress')}: {_amounts(n.get('Resources') or {})}" for n in nodes)


def _node_address(nodes: list[dict[str, Any]], where: dict[str, Any]) -> str:
    """The address of the node an actor reported it runs on (its Ray node id)."""
    for node in nodes:
        if node.get("NodeID") == where.get("node_id"):
            return str(node.get("NodeManagerAddress"))
    return str(where.get("hostname"))


def inline_segments(body: Any, folder: Path | None) -> Any:
    """An out-of-band pickle payload (:mod:`runhouse.protocol.serialization`'s layout) whose large
    buffers are in shared-memory files here, as parts with every buffer inline (mapped, not copied).
    Nothing is unpickled: only the layout's JSON is read."""
    if body is None or isinstance(body, list):
        return body
    view = memoryview(body)
    if view[:4] != OOB_MAGIC:
        return body
    (size,) = _LAYOUT_LEN.unpack_from(view, 4)
    layout = json.loads(bytes(view[8 : 8 + size]))
    segments, lengths = layout.get("shm") or {}, layout["lengths"]
    if not segments:
        return body
    if folder is None:
        raise BadRequest("the call's arguments refer to shared memory, which this host does not have", 400)
    pos = 8 + size
    parts: list[Any] = [view[pos : pos + lengths[0]]]
    pos += lengths[0]
    for i, length in enumerate(lengths[1:]):
        if str(i) in segments:
            parts.append(read_segment(folder, segments[str(i)], length))
        else:
            parts.append(view[pos : pos + length])
            pos += length
    inline = json.dumps({"lengths": lengths, "shm": {}}).encode()
    return [OOB_MAGIC + _LAYOUT_LEN.pack(len(inline)), inline, *parts]


def to_segments(body: Any, folder: Path) -> Any:
    """The reverse of :func:`inline_segments` for a reply: buffers of ``SHM_MIN_BYTES`` or more of an
    out-of-band pickle payload are written to shared-memory files and named in its layout; the
    rest (small) is joined into one bytes object. Nothing is unpickled."""
    view = memoryview(body)
    if view[:4] != OOB_MAGIC:
        return body
    (size,) = _LAYOUT_LEN.unpack_from(view, 4)
    layout = json.loads(bytes(view[8 : 8 + size]))
    lengths, segments = layout["lengths"], dict(layout.get("shm") or {})
    pos = 8 + size + lengths[0]
    stream = view[8 + size : pos]
    inline: list[memoryview] = []
    written: list[str] = []
    try:
        for i, length in enumerate(lengths[1:]):
            if str(i) in segments:
                continue
            chunk = view[pos : pos + length]
            pos += length
            if length >= SHM_MIN_BYTES:
                segments[str(i)] = outbox(folder).write(chunk)
                written.append(segments[str(i)])
            else:
                inline.append(chunk)
    except OSError:  # /dev/shm full: the reply goes as it came
        for name in written:
            outbox(folder).settle(name)
        return body
    text = json.dumps({"lengths": lengths, "shm": segments}).encode()
    return b"".join([OOB_MAGIC, _LAYOUT_LEN.pack(len(text)), text, stream, *inline])


def _answering(listed: list[dict[str, Any]]) -> dict[str, Any]:
    """Of Ray's alive entries for one address, the one whose raylet accepts a connection (the
    newest listed if none or several do)."""
    if len(listed) == 1:
        return listed[0]
    for node in reversed(listed):
        try:
            port = int(node.get("NodeManagerPort") or 0)
            with socket.create_connection((node["NodeManagerAddress"], port), timeout=1.0):
                return node
        except (OSError, ValueError):
            continue
    return listed[-1]


def _without_shm(msg: Any) -> Any:
    return msg._replace(options={**msg.options, "shm": False}) if type(msg) is Call else msg


# -- the daemon's handle -----------------------------------------------------------------------------
class PlacedWorker(WorkerHandle):
    """A worker on a node Ray chose; the same handle (and channel) as a local worker's."""

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        threads: int,
        on_exit: Callable[[WorkerHandle], None],
        placer: RayPlacer,
        listener: WorkerListener,
    ) -> None:
        super().__init__(name, {}, threads, on_exit, python="", cwd=config.get("working_dir"))
        self.config = config
        self.compute = check_compute(config.get("compute") or {})
        self.hostname: str | None = None
        self._placer = placer
        self._listener = listener
        self._actor: Any = None
        self._answered = True  # whether the actor answered when the connection ended
        self._shm_replies: set[int] = set()  # calls whose large results go to the head's shared memory
        self.output: list[str] = []  # what building the env on the node printed

    def describe(self) -> str:
        return f"worker {self.name!r} (pid {self.pid} on node {self.node})"

    def submit(self, build: Build, body: Any = None) -> tuple[int, PendingCall]:
        """As a local worker's, except that a call whose arguments sit in this host's shared memory
        (a client on the head) gets them inline: the worker's node cannot map the head's files."""
        peek = build(0)
        if type(peek) is Call and peek.options["shm"]:
            body = inline_segments(body, shm_dir())
            cid, pending = super().submit(lambda cid: _without_shm(build(cid)), body)
            self._shm_replies.add(cid)
            return cid, pending
        return super().submit(build, body)

    def _on_message(self, header: Any, body: Any) -> None:
        """A reply to a call whose client shares the head's memory: its large buffers go into shared
        memory here, so the client maps them instead of reading them through another socket."""
        if body is not None and self._shm_replies and cid_of(header) in self._shm_replies:
            folder = shm_dir()
            if folder is not None:
                body = to_segments(body, folder)
        super()._on_message(header, body)

    def forget(self, cid: int) -> None:
        self._shm_replies.discard(cid)
        super().forget(cid)

    def cancel(self, cid: int) -> None:
        self._shm_replies.discard(cid)
        super().cancel(cid)

    async def start(self, log_path: str | None = None) -> None:
        self._actor, where = await self._placer.run(self._placer.place, self.name, self.compute)
        self.node = where["node"]
        wid, secret, accepted = self._listener.expect()
        try:
            spec = {
                "name": self.name,
                "threads": self.threads,
                "connect": self._listener.address,
                "config": self.config,
                "id": wid.hex(),
                "secret": secret.hex(),
            }
            try:
                started = await self._placer.run(self._placer.start, self._actor, spec)
            except Exception as e:
                await self._placer.run(self._placer.kill, self._actor)
                cause = getattr(e, "cause", None)  # what the actor raised, under Ray's RayTaskError
                if isinstance(cause, EnvSetupError):
                    raise EnvSetupError(f"env {self.name!r} on node {self.node}: {cause}") from None
                raise WorkerDied(
                    f"could not start env {self.name!r}'s worker on node {self.node}: {e}"
                ) from e
            self.pid, self.hostname, self.python = started["pid"], started["hostname"], started["python"]
            self.output = list(started.get("output") or [])
            sock = await self._connected(accepted)
        finally:
            self._listener.forget(wid)
        await self._open(sock, lambda: "")

    async def _connected(self, accepted: asyncio.Future[socket.socket]) -> socket.socket:
        """The worker's authenticated socket; fails early if the worker exits before connecting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT_S
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(accepted), 1.0)
            except asyncio.TimeoutError:
                pass
            answered, code = await self._placer.run(self._placer.exit_code, self._actor)
            if (answered and code is not None) or loop.time() > deadline:
                tail = await self._placer.run(self._placer.log_tail, self._actor)
                await self._placer.run(self._placer.kill, self._actor)
                how = (
                    f"exited with code {code}"
                    if code is not None
                    else f"did not connect in {CONNECT_TIMEOUT_S:g}s"
                )
                raise WorkerDied(
                    f"{self.describe()} {how} before it started; the end of its log:\n{tail.rstrip()}"
                )

    async def _exit_how(self) -> str:
        if self._actor is None:
            return "did not start"
        if self._stopping:
            return "was stopped"
        answered, code = await self._placer.run(self._placer.exit_code, self._actor)
        self._answered = answered
        if answered and code is not None:
            return f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
        if answered:
            return "closed its connection to the daemon"
        return "lost its connection to the daemon: its node is down or unreachable"

    async def _after_exit(self) -> None:
        await super()._after_exit()
        if self._actor is not None and not self._stopping:  # free its resources in Ray
            await self._placer.run(self._placer.kill, self._actor, self._answered)

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self.alive = False
        if self._channel is not None:
            self._channel.close()
        if self._actor is not None:
            await self._placer.run(self._placer.kill, self._actor)

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "alive": self.alive,
            "in_flight": self.in_flight,
            "node": self.node,
            "hostname": self.hostname,
            "compute": self.compute,
        }
