"""Den's FastAPI application, built by :func:`create_app` (nothing is created at import time).

Routes are ``async def`` and run their database work (synchronous SQLAlchemy) in the thread pool,
one hop per transaction, so the event loop never blocks on the database. Den errors map to HTTP status by class
(:data:`runhouse.den.errors.STATUS_BY_ERROR`); the reply is always ``{"detail": message}``, and a
malformed request always gets a 4xx that says what to fix, never a 5xx (bodies are held to
:data:`~runhouse.den.limits.MAX_BODY_BYTES` by :class:`~runhouse.den.limits.BodyLimit`). The
OpenAPI document is served at ``/openapi.json`` and rendered at ``/docs``; the web dashboard
(:mod:`runhouse.den.dashboard`) at ``/dashboard``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException

from runhouse._version import __version__
from runhouse.den import dashboard
from runhouse.den.db import Database
from runhouse.den.errors import DenError, status_for
from runhouse.den.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, BodyLimit
from runhouse.den.routes import clusters, resources, secrets, tokens
from runhouse.den.routes.deps import Store
from runhouse.den.schemas import Health
from runhouse.den.vault import Vault

log = logging.getLogger("runhouse.den")


class _AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped, so that echoing a malformed input (a lone
    surrogate in a 422's ``input``) can never fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _den_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DenError)
    status = status_for(exc)
    if status >= 500:
        log.error("%s", exc)
    return _AsciiJSON({"detail": str(exc)}, status_code=status)


def _invalid_request(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _AsciiJSON({"detail": jsonable_encoder(exc.errors())}, status_code=422)


def _unreadable_body(cause: BaseException | None) -> str | None:
    """What to fix in a body FastAPI could not decode (it answers 400 with the decoder's error as
    the cause), or None to keep FastAPI's answer."""
    if isinstance(cause, RecursionError):
        return (
            "the JSON body is nested too deeply to read; Den accepts configs and statuses nested at "
            f"most {MAX_JSON_DEPTH} levels deep"
        )
    if isinstance(cause, UnicodeDecodeError):
        return "the request body is not valid UTF-8; send JSON encoded as UTF-8"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return "a number in the JSON body has more than 4300 digits; send such values as strings"
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = _unreadable_body(exc.__cause__) if exc.status_code == 400 else None
    if detail is not None:
        return _AsciiJSON({"detail": detail}, status_code=400)
    return await http_exception_handler(request, exc)


def _unstorable(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DataError)
    lines = str(exc.orig).strip().splitlines()
    reason = lines[0] if lines else type(exc.orig).__name__
    log.warning("refused a value the database cannot store: %s", reason)
    return _AsciiJSON(
        {"detail": f"Den's database cannot store a value of this request ({reason}); fix that value"},
        status_code=400,
    )


def _database_error(_request: Request, exc: Exception) -> Response:
    log.error("database error: %s", exc)
    return _AsciiJSON(
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
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.get("/health", tags=["health"])
    async def health() -> Health:
        """Liveness; no token needed."""
        return Health(status="ok", version=__version__, db=db.dialect)

    for module in (tokens, resources, secrets, clusters):
        app.include_router(module.router)
    dashboard.mount(app, db)
    return app
