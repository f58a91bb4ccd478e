"""Den's FastAPI application, built by :func:`create_app` (nothing is created at import time).

Routes are ``async def`` and run their database work (synchronous SQLAlchemy) in the thread pool,
one hop per transaction, so the event loop never blocks on the database. Den errors map to HTTP status by class
(:data:`runhouse.den.errors.STATUS_BY_ERROR`); the reply is always ``{"detail": message}``. The
OpenAPI document is served at ``/openapi.json`` and rendered at ``/docs``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from runhouse._version import __version__
from runhouse.den.db import Database
from runhouse.den.errors import DenError, status_for
from runhouse.den.routes import clusters, resources, secrets, tokens
from runhouse.den.routes.deps import Store
from runhouse.den.schemas import Health
from runhouse.den.vault import Vault

log = logging.getLogger("runhouse.den")

MAX_BODY_BYTES = 4 * 1024 * 1024  # a 1 MiB config escaped as JSON, with room to spare


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413 before anything parses them."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            reply = JSONResponse(
                {"detail": f"request body of {int(length)} bytes is over Den's limit of {self.limit}"},
                status_code=413,
            )
            await reply(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise DenError(f"request body is over Den's limit of {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


def _den_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DenError)
    status = status_for(exc)
    if status >= 500:
        log.error("%s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=status)


def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse(
        {"detail": "Den's database is unavailable or failed; try again, and see Den's log if it persists"},
        status_code=503,
    )


def create_app(db_url: str, data_dir: Path, secret_key: str | None = None) -> FastAPI:
    """Den for the database at ``db_url`` (migrated to the latest schema when the app starts),
    keeping its key file in ``data_dir`` unless ``secret_key`` is given."""
    db = Database(db_url)
    vault = Vault.load(data_dir, secret_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(db.upgrade)
        yield
        db.dispose()

    app = FastAPI(
        title="runhouse Den",
        version=__version__,
        description="The self-hosted registry of runhouse: users and tokens, resources by /owner/name "
        "with history, sharing, an encrypted secrets vault, usage events and cluster heartbeats.",
        lifespan=lifespan,
    )
    app.state.store = Store(db)
    app.state.vault = vault
    app.add_exception_handler(DenError, _den_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_middleware(BodyLimit)

    @app.get("/health", tags=["health"])
    async def health() -> Health:
        """Liveness; no token needed."""
        return Health(status="ok", version=__version__, db=db.dialect)

    for module in (tokens, resources, secrets, clusters):
        app.include_router(module.router)
    return app
