"""What every dashboard page shares: templates, the signed-in caller, CSRF checks, error pages.

:class:`Web` runs a page's database work the way the API's routes do (one transaction on a worker
thread), as the session's user: the token they signed in with must still be live, or the browser
is sent back to the sign-in page. Den errors become an HTML page with the API's status for them.
Every reply carries a Content-Security-Policy that allows only this Den's own scripts and styles,
so even a name that slipped past escaping could not run a script.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session as DbSession
from starlette.concurrency import run_in_threadpool

from runhouse.den.auth import USER_SCOPE, Caller
from runhouse.den.dashboard.sessions import COOKIE, Session, SessionStore, csrf_ok
from runhouse.den.dashboard.sums import ClosedBuckets
from runhouse.den.db import Database
from runhouse.den.errors import DenError, status_for
from runhouse.den.models import Token, utc_now

T = TypeVar("T")

PREFIX = "/dashboard"
HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class SignIn(Exception):
    """The request has no live session: send the browser to the sign-in page."""


class BadCsrf(Exception):
    """A change came without this session's CSRF token."""


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(("html", "svg"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["prefix"] = PREFIX
    env.filters["when"] = lambda value: "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")
    env.filters["path"] = lambda value: quote(str(value), safe="")
    return env


class Web:
    """The dashboard's state: the database, open sessions, the template environment and the usage
    sums that can no longer change."""

    def __init__(self, db: Database, key: bytes) -> None:
        self.db = db
        self.sessions = SessionStore(db, key)
        self.env = _environment()
        self.closed = ClosedBuckets()

    def html(self, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        body = self.env.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def page(
        self, request: Request, session: Session | None, name: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        base = {
            "request": request,
            "me": session,
            "csrf": session.csrf if session else "",
            "path": request.url.path,
        }
        return self.html(name, {**base, **context}, status)

    async def session(self, request: Request) -> Session:
        """The request's live session (read from the database); :class:`SignIn` if it has none."""
        found = await run_in_threadpool(self.sessions.get, request.cookies.get(COOKIE))
        if found is None:
            raise SignIn
        return found

    def _caller(self, db: DbSession, session: Session) -> Caller:
        token = db.get(Token, session.token_id)
        live = token is not None and not token.revoked and token.scope == USER_SCOPE
        if not live or (token is not None and token.expires_at is not None and token.expires_at <= utc_now()):
            raise SignIn
        return Caller(session.user_id, session.username, session.token_id, USER_SCOPE)

    async def read(self, session: Session, work: Callable[[DbSession, Caller], T]) -> T:
        def run() -> T:
            with self.db.read() as db:
                return work(db, self._caller(db, session))

        return await run_in_threadpool(run)

    async def read_anonymous(self, work: Callable[[DbSession], T]) -> T:
        """``work(db)`` in a read transaction with no session (signing in)."""

        def run() -> T:
            with self.db.read() as db:
                return work(db)

        return await run_in_threadpool(run)

    async def write(self, session: Session, work: Callable[[DbSession, Caller], T]) -> T:
        return await run_in_threadpool(self.db.write, lambda db: work(db, self._caller(db, session)))

    async def form(self, request: Request, session: Session | None) -> dict[str, str]:
        """The posted form's fields (first value of each); :class:`BadCsrf` unless it carries the
        session's CSRF token."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise DenError("the form is too large")
        fields = {k: v[0] for k, v in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items()}
        if session is not None and not csrf_ok(session, fields.get("csrf")):
            raise BadCsrf
        return fields

    async def error(self, request: Request, exc: Exception) -> Response:
        """The reply for an exception a page raised."""
        if isinstance(exc, SignIn):
            target = request.url.path if request.method == "GET" else PREFIX + "/"
            if request.url.query and request.method == "GET":
                target += "?" + request.url.query
            response = RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)
            response.delete_cookie(COOKIE, path=PREFIX)
            return response
        session = await run_in_threadpool(self.sessions.get, request.cookies.get(COOKIE))
        if isinstance(exc, BadCsrf):
            message = "This form is out of date or did not come from this dashboard (missing CSRF token). Reload the page and try again."
            return self.page(request, session, "error.html", {"status": 403, "message": message}, 403)
        assert isinstance(exc, DenError)
        status = status_for(exc)
        return self.page(request, session, "error.html", {"status": status, "message": str(exc)}, status)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)
