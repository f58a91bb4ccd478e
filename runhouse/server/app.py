"""The daemon's ASGI application, built by :func:`create_app` (no state exists at import time).

Routes are listed in one table below; errors map to HTTP status by exception class (see
:data:`runhouse.exceptions.STATUS_BY_ERROR`), never by message text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runhouse.exceptions import RunhouseError, status_for
from runhouse.protocol.errors import WireError
from runhouse.server.auth import GuardMiddleware
from runhouse.server.routes import admin, calls, objects
from runhouse.server.routes.relay import error_response
from runhouse.server.state import DaemonState
from runhouse.settings import Settings

log = logging.getLogger("runhouse.daemon")

ROUTES = [
    Route("/check", admin.check, methods=["GET"]),
    Route("/status", admin.status, methods=["GET"]),
    Route("/keys", objects.keys, methods=["GET"]),
    Route("/object", objects.put_object, methods=["POST"]),
    Route("/object", objects.get_object, methods=["GET"]),
    Route("/rename", objects.rename, methods=["POST"]),
    Route("/delete_object", objects.delete_object, methods=["POST"]),
    Route("/resource", objects.deploy, methods=["POST"]),
    Route("/resource", objects.get_resource, methods=["GET"]),
    Route("/envs", admin.envs, methods=["GET"]),
    Route("/create_env", admin.create_env, methods=["POST"]),
    Route("/kill_env", admin.kill_env, methods=["POST"]),
    Route("/logs", admin.logs, methods=["POST"]),
    Route("/run_bash", admin.run_bash, methods=["POST"]),
    Route("/{key}/{method}", calls.call_route, methods=["GET", "POST"]),
]


async def _runhouse_error(request: Request, exc: Exception) -> Response:
    status = status_for(exc)
    return error_response(status, type(exc).__name__, str(exc))


async def _wire_error(request: Request, exc: Exception) -> Response:
    return error_response(400, "BadRequest", str(exc))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    return error_response(500, "ServerError", f"{type(exc).__name__}: {exc}")


def create_app(settings: Settings, port: int, token: str, start_default_worker: bool = True) -> Any:
    """Build the daemon app. Workers start with the app's lifespan and stop with it."""
    state = DaemonState(settings, port)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_default_worker:
            await state.worker()
        try:
            yield
        finally:
            await state.stop_all()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={RunhouseError: _runhouse_error, WireError: _wire_error, Exception: _unexpected},
    )
    app.state.rh = state
    hint = f"the cluster token is in {settings.daemon_dir(port) / 'token'}"
    allowed = {settings.host} if settings.host not in ("0.0.0.0", "::") else set()
    return GuardMiddleware(app, token, allowed, settings.max_body_mb * 2**20, hint)
