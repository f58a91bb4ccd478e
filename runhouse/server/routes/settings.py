"""``POST /settings``: the original system's server settings, as far as a running daemon can change them.

The body is the original's: ``{"den_auth", "flush_auth_cache", "cluster_name", "autostop_mins",
"status_check_interval"}``, every field optional. ``flush_auth_cache: true`` forgets the cached Den
answers (a revoked share stops working at once). The others are chosen when the daemon starts
(``runhouse start`` options, the cluster's config): a value equal to the running one is accepted,
a different one is refused with 409 saying how to change it, so nothing is silently ignored.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runhouse.exceptions import BadRequest
from runhouse.server.routes._body import json_body
from runhouse.server.state import DaemonState

_FIELDS = ("den_auth", "flush_auth_cache", "cluster_name", "autostop_mins", "status_check_interval")


async def update_settings(request: Request) -> Response:
    state: DaemonState = request.app.state.rh
    body = await json_body(request)
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise BadRequest(f"unknown settings {unknown}; the daemon takes {list(_FIELDS)}", 400)
    flush = body.get("flush_auth_cache")
    if flush is not None and not isinstance(flush, bool):
        raise BadRequest("'flush_auth_cache' must be true or false", 400)
    den_auth = body.get("den_auth")
    if den_auth is not None:
        if not isinstance(den_auth, bool):
            raise BadRequest("'den_auth' must be true or false", 400)
        running = bool(getattr(request.app.state, "den_auth", False))
        if den_auth != running:
            raise BadRequest(
                f"den_auth is {'on' if running else 'off'} and is chosen when the daemon starts: "
                "restart it with rh.cluster(..., den_auth=...).up() (or `runhouse start --den-auth`)",
                409,
            )
    _same(body, "autostop_mins", state.autostop_mins, "rh.cluster(..., autostop_mins=...)")
    for name in ("cluster_name", "status_check_interval"):
        if body.get(name) is not None:
            raise BadRequest(f"{name!r} cannot change on a running daemon; restart it to change it", 409)
    flushed = 0
    if flush and state.den is not None:
        # denauth.py owns the cache; forgetting every entry is the whole of a flush
        flushed = len(state.den._cache)
        state.den._cache.clear()
    return JSONResponse(
        {"output_type": "success", "data": {"auth_cache_flushed": flushed}, "serialization": None}
    )


def _same(body: dict[str, Any], name: str, running: Any, how: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name!r} must be a number", 400)
    if running is None or float(value) != float(running):
        raise BadRequest(f"{name!r} is {running} on this daemon and is set at start: use {how}", 409)
