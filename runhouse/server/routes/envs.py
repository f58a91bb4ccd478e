"""Env routes: ``GET /envs``, ``POST /create_env`` (streams install progress), ``POST /kill_env``."""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runhouse.exceptions import BadRequest
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE
from runhouse.server.routes._body import check_env_vars, json_body
from runhouse.server.routes.relay import Progress
from runhouse.server.state import DaemonState, check_env_name
from runhouse.server.workers import DEFAULT_ENV

_LIST_FIELDS = ("reqs", "setup_cmds")


def _state(request: Request) -> DaemonState:
    return request.app.state.rh


def check_env_config(body: dict[str, Any]) -> dict[str, Any]:
    """Validate an env config from a client; the message says which field to fix."""
    check_env_name(body.get("name"))
    check_env_vars(body.get("env_vars"))
    for field in _LIST_FIELDS:
        if not isinstance(body.get(field) or [], list):
            raise BadRequest(f"{field!r} must be a list", 400)
    for req in body.get("reqs") or []:
        if (
            not isinstance(req, dict)
            or req.get("kind") not in ("pip", "local", "conda")
            or not isinstance(req.get("spec"), str)
            or not req["spec"]
        ):
            raise BadRequest(
                f"requirement {req!r} must be {{'kind': 'pip'|'local'|'conda', 'spec': ...}}", 400
            )
    if not all(isinstance(c, str) for c in body.get("setup_cmds") or []):
        raise BadRequest("'setup_cmds' must be a list of shell command strings", 400)
    working_dir = body.get("working_dir")
    if working_dir is not None and (not isinstance(working_dir, str) or not _is_dir(working_dir)):
        raise BadRequest(f"'working_dir' {working_dir!r:.200} is not a directory on the cluster", 400)
    conda = body.get("conda")
    if conda is not None and (
        not isinstance(conda, dict)
        or not isinstance(conda.get("name"), str | None)
        or not isinstance(conda.get("spec"), dict | None)
    ):
        raise BadRequest("'conda' must be {'name': str, 'spec': {...} or null}", 400)
    if not isinstance(body.get("force", False), bool):
        raise BadRequest("'force' must be true or false", 400)
    if not isinstance(body.get("resource") or {}, dict):
        raise BadRequest("'resource' must be the env's config (an object)", 400)
    venv = body.get("venv")
    if venv is not None and (not isinstance(venv, str) or "/" in venv or venv.startswith(".")):
        raise BadRequest(f"'venv' must be a plain directory name, got {venv!r}", 400)
    return body


def _is_dir(path: str) -> bool:
    return "\0" not in path and os.path.isdir(path)


async def envs(request: Request) -> Response:
    state = _state(request)
    out = []
    for name, config in state.env_configs.items():
        handle = state.workers.get(name)
        out.append(
            {
                "name": name,
                "pid": handle.pid if handle else None,
                "running": bool(handle and handle.alive),
                "python": state.env_pythons.get(name),
                "reqs": [r["spec"] for r in config.get("reqs", [])],
                "env_vars": sorted(config.get("env_vars") or {}),
                "objects": state.registry.keys(name),
                "rss_mb": handle.stats().get("rss_mb") if handle else None,
                "config": config.get("resource"),
            }
        )
    return JSONResponse({"envs": out})


async def create_env(request: Request) -> Any:
    """Build the env (installing its packages) and start its worker, streaming the installers' output."""
    state = _state(request)
    config = check_env_config(await json_body(request, ("name",)))
    fmt = "frames" if FRAMES_CONTENT_TYPE in request.headers.get("accept", "") else "json"

    async def work(emit: Any) -> dict[str, Any]:
        handle = await state.ensure_env(config, emit)
        return {"name": handle.name, "pid": handle.pid, "python": handle.python}

    return Progress(work, fmt)


async def kill_env(request: Request) -> Response:
    state = _state(request)
    body = await json_body(request, ("name",))
    name = check_env_name(body["name"])
    if name == DEFAULT_ENV:
        raise BadRequest(
            f"{DEFAULT_ENV!r} is the cluster's default env and cannot be stopped; restart the cluster to reset it",
            400,
        )
    if not await state.kill_env(name):
        raise BadRequest(f"no env named {name!r} on this cluster", 404)
    return JSONResponse({"name": name, "stopped": True})
