"""Daemon-level routes: ``/check``, ``/status``, ``/logs`` and ``/run_bash``."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from typing import Any

import psutil
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runhouse._version import __version__
from runhouse.exceptions import BadRequest
from runhouse.protocol.messages import Ok, Status
from runhouse.protocol.shm import host_id
from runhouse.protocol.wire import PROTOCOL_VERSION
from runhouse.server.routes._body import check_env_vars, json_body
from runhouse.server.state import DaemonState, check_env_name

RUN_BASH_TIMEOUT_S = 3600


@functools.cache
def _host_id() -> str:
    """Read once, on the first /check (not at import)."""
    return host_id()


def _state(request: Request) -> DaemonState:
    return request.app.state.rh


async def check(request: Request) -> Response:
    return JSONResponse({"rh_version": __version__, "protocol": PROTOCOL_VERSION, "host_id": _host_id()})


async def status(request: Request) -> Response:
    """The daemon's state. Besides our fields, the original's: ``cluster_config`` (what the client
    that started the daemon said about the cluster), ``runhouse_version``, ``server_pid``,
    ``env_servlet_processes`` (per env: pid, CPU and memory) and the server's own CPU and memory."""
    state = _state(request)
    workers = []
    for name, handle in sorted(state.workers.items()):
        info = handle.stats()
        info["objects"] = state.registry.keys(name)
        if handle.alive:
            reply, _ = await handle.request(Status)
            if isinstance(reply, Ok):
                info["running"] = reply.value["running"]
        workers.append(info)
    me = psutil.Process()
    memory = psutil.virtual_memory()
    return JSONResponse(
        {
            "cluster_config": state.cluster_config(),
            "runhouse_version": __version__,
            "server_pid": os.getpid(),
            "server_cpu_utilization": psutil.cpu_percent(interval=None),
            "server_memory_usage": {"used": memory.used, "total": memory.total, "percent": memory.percent},
            "env_servlet_processes": {w["name"]: _env_usage(w, state) for w in workers},
            "rh_version": __version__,
            "pid": os.getpid(),
            "port": state.port,
            "uptime_s": round(time.time() - state.started, 1),
            "daemon_rss_mb": round(me.memory_info().rss / 2**20, 1),
            "calls_served": state.calls_served,
            "fast_calls": state.fast_calls,
            "idle_s": round(time.time() - state.last_activity, 1),
            "workers": workers,
            "den": state.den.stats() if state.den is not None else None,
            "nodes": await state.nodes(),  # a multi-node cluster's nodes and their workers; else None
        }
    )


def _env_usage(worker: dict[str, Any], state: DaemonState) -> dict[str, Any]:
    """One env's entry in ``env_servlet_processes``, named as the original named them."""
    total = psutil.virtual_memory().total
    rss = int((worker.get("rss_mb") or 0) * 2**20)
    return {
        "pid": worker.get("pid"),
        "env_cpu_usage": {"cpu_percent": worker.get("cpu_percent", 0.0)},
        "env_memory_usage": {"used": rss, "total": total, "percent": round(100 * rss / total, 2)},
        "node_index": 0,
        "node_ip": "127.0.0.1",
        "objects": worker.get("objects", []),
        "python": state.env_pythons.get(worker["name"], sys.executable),
    }


async def logs(request: Request) -> Response:
    state = _state(request)
    body = await json_body(request, ("run_name",))
    run_name = body["run_name"]
    if not isinstance(run_name, str):
        raise BadRequest(f"'run_name' must be a string (got {run_name!r:.80})", 400)
    if run_name not in state.run_logs and run_name not in state.running_runs:
        raise BadRequest(
            f"no output recorded for run {run_name!r} (only named runs that print are kept)", 404
        )
    return JSONResponse(
        {
            "run_name": run_name,
            "running": run_name in state.running_runs,
            "output": "".join(state.run_logs.get(run_name, [])),
        }
    )


async def _run_one(command: str, cwd: str | None, env: dict[str, str]) -> list[Any]:
    proc = await asyncio.create_subprocess_shell(
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_BASH_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    return [proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")]


def _env_context(state: DaemonState, name: Any) -> tuple[dict[str, str], str | None]:
    """The environment and working dir commands run with: an env's (its variables, its venv or
    conda env first on PATH, its working dir) when ``name`` is given, else the daemon's."""
    if name is None:
        return {**os.environ, "RH_PORT": str(state.port)}, None
    name = check_env_name(name)
    config = state.env_configs.get(name)
    if config is None:
        known = ", ".join(sorted(state.env_configs))
        raise BadRequest(f"no env named {name!r} on this cluster (envs: {known})", 404)
    python = state.env_pythons.get(name, sys.executable)
    return state.env_environ(config, python), config.get("working_dir")


async def run_bash(request: Request) -> Response:
    """Run shell commands on the cluster, one after another: ``[[rc, stdout, stderr], ...]``.

    With ``"env": name`` they run in that env's context (variables, Python, working dir)."""
    state = _state(request)
    body = await json_body(request, ("commands",))
    commands = body["commands"]
    if isinstance(commands, str):
        commands = [commands]
    if not isinstance(commands, list) or not all(isinstance(c, str) and "\0" not in c for c in commands):
        raise BadRequest("'commands' must be a list of shell command strings", 400)
    cwd = body.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or "\0" in cwd or not os.path.isdir(cwd)):
        raise BadRequest(f"cwd {cwd!r:.200} is not a directory on the cluster", 400)
    extra = check_env_vars(body.get("env_vars"))
    if not isinstance(body.get("stop_on_error", False), bool):
        raise BadRequest("'stop_on_error' must be true or false", 400)
    env, env_cwd = _env_context(state, body.get("env"))
    env.update(extra)
    cwd = cwd or env_cwd
    state.touch()
    results = []
    for command in commands:
        result = await _run_one(command, cwd, env)
        results.append(result)
        if body.get("stop_on_error") and result[0] != 0:
            break
    return JSONResponse({"results": results})
