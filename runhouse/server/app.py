"""The daemon's ASGI application, built by :func:`create_app` (no state exists at import time).

Routes are listed in one table below; errors map to HTTP status by exception class (see
:data:`runhouse.exceptions.STATUS_BY_ERROR`), never by message text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runhouse.exceptions import RunhouseError
from runhouse.protocol.errors import WireError
from runhouse.server.auth import GuardMiddleware
from runhouse.server.denauth import DenAuth
from runhouse.server.routes import admin, calls, envs, files, folders, objects, settings
from runhouse.server.routes.openapi import describe_route
from runhouse.server.routes.relay import reply_for_error
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
    Route("/envs", envs.envs, methods=["GET"]),
    Route("/create_env", envs.create_env, methods=["POST"]),
    Route("/kill_env", envs.kill_env, methods=["POST"]),
    Route("/logs", admin.logs, methods=["POST"]),
    Route("/run_bash", admin.run_bash, methods=["POST"]),
    Route("/folder/sync", folders.sync_plan, methods=["POST"]),
    Route("/folder/upload", folders.upload, methods=["POST"]),
    # the original system's routes (docs/architecture.md, "Compatibility routes")
    Route("/settings", settings.update_settings, methods=["POST"]),
    Route("/folder/method/ls", files.ls, methods=["POST"]),
    Route("/folder/method/mkdir", files.mkdir, methods=["POST"]),
    Route("/folder/method/get", files.get, methods=["POST"]),
    Route("/folder/method/put", files.put, methods=["POST"]),
    Route("/folder/method/rm", files.rm, methods=["POST"]),
    Route("/folder/method/mv", files.mv, methods=["POST"]),
    Route("/folder/method/exists", files.exists, methods=["POST"]),
]
FIXED_PATHS = frozenset(route.path for route in ROUTES)


async def _handle_error(request: Request, exc: Exception) -> Response:
    reply = reply_for_error(exc)
    if reply.status < 500:  # a refused request is worth a line in the log, not a traceback
        log.info("refused %s %s: %s %s", request.method, request.url.path, reply.status, exc)
    return Response(b"".join(reply.parts), status_code=reply.status, media_type=reply.content_type.decode())


class CallDispatcher:
    """Sends ``/{key}/{method}`` straight to the call handler and everything else to Starlette.

    Calls are the hot path: skipping the framework's routing and request objects for them roughly
    doubles the calls per second one daemon process can serve. ``GET /{key}/openapi.json`` and
    ``GET /{key}/docs`` describe the object instead of calling it (:mod:`routes.openapi`); the
    fast path serves POST only, so it never sees them.
    """

    def __init__(self, app: Starlette, state: DaemonState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in FIXED_PATHS:
            parts = path.split("/")
            if len(parts) == 3 and parts[1] and parts[2]:
                key, method = unquote(parts[1]), unquote(parts[2])
                try:
                    described = describe_route(self.state, key, method) if scope["method"] == "GET" else None
                    reply = described or await calls.handle_call(self.state, scope, receive, key, method)
                except Exception as exc:  # noqa: BLE001 - mapped to a status by type
                    reply = reply_for_error(exc)
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings,
    port: int,
    token: str,
    start_default_worker: bool = True,
    autostop_mins: float | None = None,
    den: DenAuth | None = None,
    den_auth: bool = False,
) -> Any:
    """Build the daemon app. Workers start with the app's lifespan and stop with it.

    The returned app has ``daemon_state``; set its ``on_idle`` to stop the server when
    ``autostop_mins`` pass without activity."""
    state = DaemonState(settings, port)
    state.autostop_mins = autostop_mins
    state.den = den
    if den is not None:
        den.fixed_paths = FIXED_PATHS

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_default_worker:  # in the background: the server answers /check meanwhile
            state.in_background(state.ensure_default_worker())
        state.in_background(state.sweep_shared_memory())
        if autostop_mins is not None:
            state.in_background(state.autostop(autostop_mins))
        if den is not None:
            state.in_background(state.report_to_den(den))
        try:
            yield
        finally:
            await state.stop_all()
            if den is not None:
                await den.close()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        # our errors and wire errors are answered by the exception middleware (no traceback logged);
        # anything else reaches Starlette's server-error handler, which logs it
        exception_handlers={RunhouseError: _handle_error, WireError: _handle_error, Exception: _handle_error},
    )
    app.state.rh = state
    app.state.den_auth = den_auth
    hint = f"the cluster token is in {settings.daemon_dir(port) / 'token'}"
    # Bound to every address (an explicit opt-in), any Host name may reach it; the token still guards it.
    allowed = {settings.host} if settings.host not in ("0.0.0.0", "::") else None
    guard = GuardMiddleware(
        CallDispatcher(app, state),
        token,
        allowed,
        settings.max_body_mb * 2**20,
        hint,
        den=den if den_auth else None,
    )
    guard.daemon_state = state
    return guard
