"""Everything the daemon keeps while it runs: its workers, the key registry and recent run logs.

Built by :func:`runhouse.server.app.create_app`; nothing here exists at import time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from typing import Any

from runhouse.exceptions import BadRequest
from runhouse.server.registry import ObjectRegistry
from runhouse.server.workers import DEFAULT_ENV, WorkerHandle
from runhouse.settings import Settings

log = logging.getLogger("runhouse.daemon")

MAX_RUN_LOGS = 200
MAX_RUN_LOG_CHARS = 1 << 20


class DaemonState:
    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.started = time.time()
        self.registry = ObjectRegistry()
        self.workers: dict[str, WorkerHandle] = {}
        self.env_configs: dict[str, dict[str, Any]] = {DEFAULT_ENV: {"name": DEFAULT_ENV, "env_vars": {}}}
        self.run_logs: OrderedDict[str, list[str]] = OrderedDict()
        self.running_runs: set[str] = set()
        self.calls_served = 0
        self.last_activity = time.time()
        self._starting: dict[str, asyncio.Task[WorkerHandle]] = {}
        self.stopping = False
        self._background: set[asyncio.Task[Any]] = set()

    # -- workers ------------------------------------------------------------------------
    async def worker(self, env: str = DEFAULT_ENV, env_config: dict[str, Any] | None = None) -> WorkerHandle:
        """The live worker for ``env``, started (once, even under concurrent requests) if needed."""
        handle = self.workers.get(env)
        if handle is not None and handle.alive:
            return handle
        if env_config is not None:
            self.env_configs[env] = env_config
        else:
            self.env_configs.setdefault(env, {"name": env, "env_vars": {}})
        task = self._starting.get(env)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._start_worker(env))
            self._starting[env] = task
            task.add_done_callback(lambda _t: self._starting.pop(env, None))
        return await asyncio.shield(task)

    async def _start_worker(self, env: str) -> WorkerHandle:
        config = self.env_configs.get(env, {"name": env})
        env_vars = {str(k): str(v) for k, v in (config.get("env_vars") or {}).items()}
        handle = WorkerHandle(env, env_vars, self.settings.worker_threads, self._on_worker_exit)
        log_path = str(self.settings.daemon_dir(self.port) / f"worker-{_safe(env)}.log")
        await handle.start(log_path)
        self.workers[env] = handle
        return handle

    def _on_worker_exit(self, handle: WorkerHandle) -> None:
        if self.workers.get(handle.name) is handle:
            del self.workers[handle.name]
            gone = self.registry.drop_env(handle.name)
            if gone:
                log.warning("objects lost with worker %s: %s", handle.name, ", ".join(gone))
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

    async def kill_env(self, env: str) -> bool:
        handle = self.workers.pop(env, None)
        self.registry.drop_env(env)
        if env != DEFAULT_ENV:
            self.env_configs.pop(env, None)
        if handle is None:
            return False
        await handle.stop()
        if env == DEFAULT_ENV and not self.stopping:
            await self.worker(DEFAULT_ENV)
        return True

    async def stop_all(self) -> None:
        self.stopping = True
        await asyncio.gather(*(h.stop() for h in list(self.workers.values())), return_exceptions=True)
        self.workers.clear()

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


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def check_env_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 128 or os.sep in name or name.startswith("."):
        raise BadRequest(f"invalid env name {name!r}: use letters, digits, '-', '_' or '.'", 400)
    return name
