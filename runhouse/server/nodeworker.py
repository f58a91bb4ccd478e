"""The Ray actor that runs one of our workers on a node of a multi-node cluster.

The daemon (:mod:`runhouse.server.placement`) creates one :class:`NodeWorker` per placed env, with
the env's ``compute=`` as the actor's resources, so Ray's scheduler picks the node and accounts
for what the worker holds. The actor builds the env on its node (packages, venv, setup commands,
with the same :class:`~runhouse.server.envs.EnvBuilder` as the head) and starts our ordinary
worker process there (``python -m runhouse.server.worker --connect head:port``), which connects
back to the daemon. Calls never go through Ray: the actor only starts, watches and stops the
process. The worker stays in the actor's process session, which is the session of the node's
``ray start``, so stopping that node's Ray stops it too.

This module does not import Ray: the daemon wraps the class with ``ray.remote`` when it places the
first worker, and Ray imports it by name on the node (every host has the same runhouse installed).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from runhouse.server.envs import EnvBuilder
from runhouse.settings import load_settings

_BUILD_FIELDS = ("reqs", "setup_cmds", "venv", "conda")


class NodeWorker:
    """One placed worker's process on this node (see the module docstring)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    def ready(self) -> dict[str, Any]:
        """Answered once Ray has placed the actor: where it runs."""
        import ray  # present: this runs in a Ray actor

        node_id = ray.get_runtime_context().get_node_id()
        return {"hostname": socket.gethostname(), "pid": os.getpid(), "node_id": node_id}

    def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Build the env and start the worker process. ``spec``: ``name``, ``threads``,
        ``connect`` (the daemon's ``host:port``), ``config`` (the env's wire config), ``id`` and
        ``secret`` (hex). Returns the worker's pid, the node's hostname, the Python it runs and
        the build's output lines."""
        config: dict[str, Any] = spec["config"]
        lines: list[str] = []
        folder = node_dir()
        builder = EnvBuilder(folder / "envs", lines.append)
        python = sys.executable
        if any(config.get(f) for f in _BUILD_FIELDS):
            python = asyncio.run(builder.build(config))
        environ = builder.worker_environ(config, python)
        environ.update({"RH_WORKER_ID": spec["id"], "RH_WORKER_SECRET": spec["secret"]})
        folder.mkdir(parents=True, exist_ok=True)
        self._log = folder / f"worker-{_safe(spec['name'])}.log"
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(
                [
                    python,
                    "-m",
                    "runhouse.server.worker",
                    "--connect",
                    spec["connect"],
                    "--name",
                    spec["name"],
                    "--threads",
                    str(spec["threads"]),
                ],
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=config.get("working_dir") or None,
            )
        return {
            "pid": self._proc.pid,
            "hostname": socket.gethostname(),
            "python": python,
            "output": lines,
            "log": str(self._log),
        }

    def exit_code(self) -> int | None:
        """The worker's exit code, or None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, limit: int = 4000) -> str:
        if self._log is None:
            return ""
        try:
            return self._log.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, grace_s: float = 5.0) -> int | None:
        """Stop the worker process (SIGTERM, then SIGKILL after ``grace_s``); its exit code."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        proc.terminate()
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(grace_s)


def probe_node() -> dict[str, Any]:
    """What ``cluster.status()`` shows of a node beyond Ray's accounting: its hostname, CPU count,
    memory and, where ``nvidia-smi`` exists, its GPUs (name, memory, utilization)."""
    import psutil

    gpus: list[dict[str, Any]] | None = None
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            gpus = parse_nvidia_smi(out.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        gpus = None
    return {
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "memory_total": psutil.virtual_memory().total,
        "nvidia_smi": gpus,
    }


SMI_FIELDS = "index,name,memory.total,memory.used,utilization.gpu"


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader,nounits`` as one dict per GPU
    (a field a GPU does not report, ``[N/A]``, becomes None)."""

    def number(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None

    gpus = []
    for line in text.strip().splitlines():
        index, rest = line.split(",", 1)
        name, total, used, util = (p.strip() for p in rest.rsplit(",", 3))  # a name may hold commas
        gpus.append(
            {
                "index": int(index.strip()),
                "name": name,
                "memory_total_mb": number(total),
                "memory_used_mb": number(used),
                "utilization_percent": number(util),
            }
        )
    return gpus


def node_dir() -> Path:
    """Where placed workers keep their envs and logs on a node."""
    return load_settings().home / "nodes"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
