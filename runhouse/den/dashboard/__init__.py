"""Den's web dashboard: the team's resources, clusters, usage, secrets and tokens in a browser.

Served by Den itself under ``/dashboard`` (:func:`mount`), as server-rendered HTML (Jinja2,
autoescaped) with its stylesheet and one small script shipped in the package, so it works with no
internet access. Sign-in takes a Den user token and opens a cookie session
(:mod:`~runhouse.den.dashboard.sessions`); pages read through :mod:`~runhouse.den.dashboard.queries`
with the API's access rule, and changes call the API's own registry functions
(:mod:`~runhouse.den.dashboard.pages`). Charts are SVG drawn on the server
(:mod:`~runhouse.den.dashboard.charts`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from runhouse.den.dashboard import observe, pages
from runhouse.den.dashboard.sessions import KEY_PURPOSE
from runhouse.den.dashboard.web import HERE, PREFIX, BadCsrf, SignIn, Web
from runhouse.den.db import Database
from runhouse.den.errors import DenError

__all__ = ["PREFIX", "mount"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _route_class(web: Web) -> type[APIRoute]:
    class DashboardRoute(APIRoute):
        """Answers a page's errors with HTML (or a redirect to sign in), not the API's JSON."""

        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except (SignIn, BadCsrf, DenError) as e:
                    return await web.error(request, e)

            return guarded

    return DashboardRoute


def mount(app: FastAPI, db: Database) -> Web:
    """Serve the dashboard for ``db`` on ``app`` under ``/dashboard``, signing its cookies with a
    key derived from ``app.state.vault``'s (the same on every Den with the same secret key)."""
    web = Web(db, app.state.vault.subkey(KEY_PURPOSE))
    router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=_route_class(web))
    pages.add_routes(router, web)
    observe.add_routes(router, web)
    app.include_router(router)
    app.mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    return web
