"""Everything the daemon keeps while it runs: its workers, the key registry and recent run logs.

Built by :func:`runhouse.server.app.create_app`; nothing here exists at import time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from runhouse.exceptions import BadRequest
from runhouse.protocol.arena import sweep_dead
from runhouse.protocol.shm import shm_dir, sweep
from runhouse.server.envs import Emit, EnvBuilder
from runhouse.server.placement import PlacedWorker, RayPlacer, WorkerListener, check_compute
from runhouse.server.registry import ObjectRegistry
from runhouse.server.workers import DEFAULT_ENV, WorkerHandle
from runhouse.settings import Settings

log = logging.getLogger("runhouse.daemon")

MAX_RUN_LOGS = 200
CLUSTER_FILE = "cluster.json"  # the cluster's config (no credentials), written by the client at start
MAX_RUN_LOG_CHARS = 1 << 20


class DaemonState:
    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.started = time.time()
        self.registry = ObjectRegistry()
        self.workers: dict[str, WorkerHandle] = {}
        self.env_configs: dict[str, dict[str, Any]] = {DEFAULT_ENV: {"name": DEFAULT_ENV}}
        self.env_pythons: dict[str, str] = {}
        self._env_locks: dict[str, asyncio.Lock] = {}
        self.run_logs: OrderedDict[str, list[str]] = OrderedDict()
        self.running_runs: set[str] = set()
        self.calls_served = 0
        self.fast_calls = 0  # calls served by the fast path (runhouse.server.fastpath)
        self.last_activity = time.time()
        self.den: Any = None  # a DenAuth when the daemon has a Den identity (den_auth clusters)
        self._starting: dict[str, asyncio.Task[WorkerHandle]] = {}
        self.stopping = False
        self.autostop_mins: float | None = None
        self.on_idle: Callable[[], None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._placer: RayPlacer | None = None  # multi-node only, made when first needed
        self._listener: WorkerListener | None = None

    # -- envs and workers -------------------------------------------------------------------
    @property
    def envs_dir(self) -> Path:
        return self.settings.daemon_dir(self.port) / "envs"

    async def worker(self, env: str = DEFAULT_ENV) -> WorkerHandle:
        """The live worker for ``env``, started (once, even under concurrent requests) if needed."""
        handle = self.workers.get(env)
        if handle is not None and handle.alive:
            return handle
        self.env_configs.setdefault(env, {"name": env})
        task = self._starting.get(env)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._start_worker(env))
            self._starting[env] = task
            task.add_done_callback(lambda _t: self._starting.pop(env, None))
        return await asyncio.shield(task)

    async def ensure_env(self, config: dict[str, Any], emit: Emit | None = None) -> WorkerHandle:
        """Make the env ``config`` describes exist and return its worker.

        A config with ``"ref": True`` only names an env: an existing one is used as it is. A new or
        changed config is built (packages installed, setup commands run), and so is an unchanged
        one with ``"force": True``; a worker whose environment changed is restarted, and says so,
        since its objects are lost.
        """
        name = check_env_name(config.get("name"))
        force = bool(config.get("force"))
        emit = emit or _log_emit(name)
        lock = self._env_locks.setdefault(name, asyncio.Lock())
        async with lock:
            old = self.env_configs.get(name)
            handle = self.workers.get(name)
            running = handle is not None and handle.alive
            if config.get("ref") and (old is not None or name == DEFAULT_ENV):
                return await self.worker(name)
            config = {
                k: v
                for k, v in config.items()
                if k == "name" or (k not in ("ref", "force") and v not in (None, [], {}))
            }
            if force and old is not None and config.keys() <= {"name", "resource"}:
                config = {**config, **old}  # reinstall what the env has, not an empty env
            if running and old == config and not force:
                return await self.worker(name)
            if config.get("compute"):  # built on the node Ray places its worker on
                self._check_placeable(name, config)
            else:
                self.env_pythons[name] = await EnvBuilder(self.envs_dir, emit).build(config)
            self.env_configs[name] = config
            if running and old is not None and _restart_needed(old, config):
                emit(f"Restarting the worker of env {name!r} for its new settings (its objects are lost)\n")
                await self._stop_worker(name)
            try:
                handle = await self.worker(name)
            except Exception:
                if config.get("compute"):  # not placed: the env stays as it was (or absent)
                    if old is None:
                        self.env_configs.pop(name, None)
                    else:
                        self.env_configs[name] = old
                raise
            if isinstance(handle, PlacedWorker) and handle.output:
                emit(f"[{handle.node}] " + f"[{handle.node}] ".join(handle.output))
                handle.output = []
            return handle

    # -- workers on other nodes (multi-node clusters) ---------------------------------------------
    def _check_placeable(self, name: str, config: dict[str, Any]) -> None:
        compute = check_compute(config["compute"])
        if name == DEFAULT_ENV:
            raise BadRequest(
                f"{DEFAULT_ENV!r} always runs on the head: give an env with compute={compute} a name of its own",
                400,
            )
        if self.settings.ray_address is None:
            raise BadRequest(
                f"env {name!r}: compute={compute} places a worker on a node of a multi-node cluster "
                "(rh.cluster(host=[h1, h2, ...])); this cluster is one machine, which every worker "
                "shares: leave compute unset",
                400,
            )

    def placement(self) -> tuple[RayPlacer, WorkerListener]:
        """The Ray driver and worker listener of a multi-node daemon (made on first use)."""
        if self._placer is None or self._listener is None:
            assert self.settings.ray_address is not None
            head = self.settings.ray_address.rsplit(":", 1)[0]
            self._placer = RayPlacer(self.settings.ray_address, self._hosts)
            self._listener = WorkerListener(head)
        return self._placer, self._listener

    def _hosts(self) -> list[str]:
        hosts = self.cluster_config().get("host") or []
        return [str(h) for h in hosts] if isinstance(hosts, list) else [str(hosts)]

    async def nodes(self) -> list[dict[str, Any]] | None:
        """Each node of a multi-node cluster (Ray's view, a probe of the node, and the workers on
        it: ``workers`` lists env and pid); None on a cluster of one machine."""
        if self.settings.ray_address is None:
            return None
        placer, _ = self.placement()
        nodes: list[dict[str, Any]] = await placer.run(placer.nodes)
        head = self.settings.ray_address.rsplit(":", 1)[0]
        by_address = {n["address"]: n for n in nodes if n["alive"]}
        for node in nodes:
            node["workers"] = []
        for name, handle in sorted(self.workers.items()):
            on = by_address.get(handle.node or head)
            if on is not None:
                on["workers"].append({"env": name, "pid": handle.pid, "alive": handle.alive})
        return nodes

    async def _start_worker(self, env: str) -> WorkerHandle:
        config = self.env_configs.get(env) or {"name": env}
        if config.get("compute"):
            placer, listener = self.placement()
            await listener.open()
            placed = PlacedWorker(
                env, config, self.settings.worker_threads, self._on_worker_exit, placer, listener
            )
            await placed.start()
            self.workers[env] = placed
            return placed
        python = self.env_pythons.get(env, sys.executable)
        environ = self.env_environ(config, python)
        handle = WorkerHandle(
            env,
            environ,
            self.settings.worker_threads,
            self._on_worker_exit,
            python=python,
            cwd=config.get("working_dir"),
        )
        log_path = str(self.settings.daemon_dir(self.port) / f"worker-{_safe(env)}.log")
        await handle.start(log_path)
        self.workers[env] = handle
        return handle

    def env_environ(self, config: dict[str, Any], python: str) -> dict[str, str]:
        """The environment of an env's worker and shell commands: the env's variables and Python,
        and this daemon's port as ``RH_PORT``, so ``rh.here`` there is this cluster."""
        environ = EnvBuilder(self.envs_dir, _log_emit(config["name"])).worker_environ(config, python)
        environ["RH_PORT"] = str(self.port)
        return environ

    def cluster_config(self) -> dict[str, Any]:
        """The cluster's config as the client that started the daemon described it, or {}."""
        try:
            loaded = json.loads((self.settings.daemon_dir(self.port) / CLUSTER_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _on_worker_exit(self, handle: WorkerHandle) -> None:
        if self.workers.get(handle.name) is handle:
            del self.workers[handle.name]
            gone = self.registry.drop_env(handle.name)
            if gone:
                level = logging.INFO if self.stopping else logging.WARNING  # a stop drops them as asked
                log.log(level, "objects lost with worker %s: %s", handle.name, ", ".join(gone))
        if handle.name == DEFAULT_ENV and not self.stopping:
            self.in_background(self.ensure_default_worker())

    def in_background(self, coro: Any) -> None:
        """Run ``coro`` as a task the daemon keeps a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def ensure_default_worker(self) -> None:
        try:
            await self.worker(DEFAULT_ENV)
        except Exception:  # logged; the next request that needs it tries again
            log.exception("could not start the default worker")

    async def report_to_den(self, den: Any) -> None:
        """Every ``den.heartbeat_s``: send Den this daemon's status and the calls counted per user."""
        while not self.stopping:
            status = {
                "pid": os.getpid(),
                "port": self.port,
                "uptime_s": round(time.time() - self.started, 1),
                "calls_served": self.calls_served,
                "idle_s": round(time.time() - self.last_activity, 1),
                "workers": sorted(self.workers),
                "objects": self.registry.keys(None),
                "running_calls": sum(h.in_flight for h in self.workers.values()),
                "autostop_mins": self.autostop_mins,
            }
            await den.report(status)
            await asyncio.sleep(den.heartbeat_s)

    async def autostop(self, minutes: float) -> None:
        """Stop the daemon after ``minutes`` without calls, running work or interactive SSH sessions."""
        limit = minutes * 60
        while not self.stopping:
            await asyncio.sleep(max(0.2, min(5.0, limit / 4)))
            if (
                any(h.in_flight for h in self.workers.values())
                or self.running_runs
                or _interactive_sessions()
            ):
                self.touch()
            if time.time() - self.last_activity >= limit:
                log.warning("idle for %.1f minutes: stopping (autostop_mins=%s)", minutes, minutes)
                if self.on_idle is not None:
                    self.on_idle()
                return

    async def sweep_shared_memory(self, every_s: float = 300.0) -> None:
        """Remove shared-memory segments that no reader took (their reader crashed or left), and
        reusable segments whose writer process is gone."""
        folder = shm_dir()
        while folder is not None and not self.stopping:
            removed = sweep(folder) + sweep_dead(folder)
            if removed:
                log.info("removed %d stale shared-memory segments from %s", removed, folder)
            await asyncio.sleep(every_s)

    async def _stop_worker(self, env: str) -> None:
        handle = self.workers.pop(env, None)
        self.registry.drop_env(env)
        if handle is not None:
            await handle.stop()

    async def kill_env(self, env: str) -> bool:
        """Stop an env's worker (its objects are dropped) and forget the env."""
        running = env in self.workers
        await self._stop_worker(env)
        if env != DEFAULT_ENV:
            known = self.env_configs.pop(env, None) is not None
            self.env_pythons.pop(env, None)
            return running or known
        if not self.stopping:
            await self.worker(DEFAULT_ENV)
        return running

    async def stop_all(self) -> None:
        self.stopping = True
        await asyncio.gather(*(h.stop() for h in list(self.workers.values())), return_exceptions=True)
        self.workers.clear()
        if self._listener is not None:
            self._listener.close()
        if self._placer is not None:
            self._placer.close()

    # -- run logs -------------------------------------------------------------------------
    def record_output(self, run_name: str, text: str) -> None:
        parts = self.run_logs.get(run_name)
        if parts is None:
            parts = self.run_logs[run_name] = []
            while len(self.run_logs) > MAX_RUN_LOGS:
                self.run_logs.popitem(last=False)
        if sum(map(len, parts)) < MAX_RUN_LOG_CHARS:
            parts.append(text)

    def touch(self) -> None:
        self.last_activity = time.time()


_RESTART_FIELDS = ("env_vars", "venv", "conda", "working_dir", "setup_cmds")


def _restart_needed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a running worker must restart to see the new config (new packages alone do not,
    except for a worker on another node: its env is built there, when it starts)."""
    if old.get("compute") or new.get("compute"):
        return old != new
    return any(old.get(f) != new.get(f) for f in _RESTART_FIELDS)


def _interactive_sessions() -> int:
    """Terminal sessions opened over SSH on this machine: people at work count as activity.

    A session is a process on a pseudo-terminal with an ``sshd`` among its ancestors (login
    records are not kept everywhere, e.g. in containers, so processes are what is looked at)."""
    count = 0
    for proc in psutil.process_iter(["terminal"]):
        terminal = proc.info.get("terminal") or ""
        if not terminal.startswith("/dev/pts/"):
            continue
        try:
            if any(parent.name() == "sshd" for parent in proc.parents()):
                count += 1
        except psutil.Error:
            continue
    return count


def _log_emit(env: str) -> Emit:
    def emit(text: str) -> None:
        if text.strip():
            log.info("env %s: %s", env, text.rstrip())

    return emit


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def check_env_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 128 or os.sep in name or name.startswith("."):
        raise BadRequest(f"invalid env name {name!r}: use letters, digits, '-', '_' or '.'", 400)
    return name
