"""The dashboard's sign-in, resource, secret and token pages, and the changes made from them.

Changes are forms posted with the session's CSRF token; they call the same registry functions as
the API (``registry.share``, ``unshare``, ``set_visibility``, ``auth.mint``), so the same access
checks and errors apply, and then redirect back (post/redirect/get). A new token is the exception:
its secret is shown once, on the page the post returns.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import delete
from sqlalchemy.orm import Session as DbSession
from starlette.concurrency import run_in_threadpool

from runhouse.den import auth, registry
from runhouse.den.auth import Caller
from runhouse.den.dashboard import queries
from runhouse.den.dashboard.sessions import COOKIE, LOGIN_COOKIE, SESSION_TTL_S
from runhouse.den.dashboard.web import PREFIX, BadCsrf, Web, redirect
from runhouse.den.errors import Forbidden, InvalidInput, NotFound
from runhouse.den.limits import shown
from runhouse.den.models import DashboardSession, Token
from runhouse.den.names import VISIBILITIES, check_visibility, uri

MAX_DIFF_LINES = 2000
DONE = {
    "shared": "Shared.",
    "revoked": "Access revoked.",
    "visibility": "Visibility changed.",
    "token-revoked": "Token revoked.",
}


def _offset(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 9 else 0


def _next(value: str | None) -> str:
    """Where to go after signing in: a dashboard page of this Den, never another site."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/resources"


def _pretty(text: str) -> str:
    return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)


def _diff(old: str, new: str) -> list[tuple[str, str]]:
    """(css class, line) of a unified diff of two pretty-printed configs."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    out: list[tuple[str, str]] = []
    for line in list(lines)[2:]:  # skip the ---/+++ header
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        out.append((kind, line))
        if len(out) >= MAX_DIFF_LINES:
            out.append(("hunk", f"... (diff cut at {MAX_DIFF_LINES} lines)"))
            break
    return out


def _version_arg(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 10 else None


def _resource_page(
    db: DbSession, caller: Caller, owner: str, name: str, a: int | None, b: int | None
) -> dict[str, Any]:
    resource = registry.require_resource(db, owner, name)
    level = registry.require_access(db, caller, resource, owner, "read")
    versions = queries.versions(db, resource)
    new = b if b is not None else resource.version
    old = a if a is not None else new - 1
    diff: list[tuple[str, str]] | None = None
    if old >= 1 and old != new:
        old_text, new_text = (
            queries.version_config(db, resource, old),
            queries.version_config(db, resource, new),
        )
        if old_text is None or new_text is None:
            raise NotFound(f"{uri(owner, name)} has no version {old if old_text is None else new}")
        diff = _diff(_pretty(old_text), _pretty(new_text))
    return {
        "owner": owner,
        "resource": resource,
        "config": _pretty(resource.config),
        "level": level,
        "versions": versions,
        "shares": registry.shares(db, resource),
        "diff": diff,
        "old": old,
        "new": new,
        "is_owner": resource.owner_id == caller.user_id,
        "visibilities": VISIBILITIES,
    }


def add_routes(router: APIRouter, web: Web) -> None:
    """Sign-in and out, resources, secrets and tokens."""

    @router.get("/login")
    async def login_form(request: Request, next: str | None = None) -> Response:
        cookie, csrf = web.sessions.login_nonce()
        page = web.page(request, None, "login.html", {"next": _next(next), "login_csrf": csrf, "error": None})
        page.set_cookie(LOGIN_COOKIE, cookie, max_age=3600, path=PREFIX, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip
        return page

    @router.post("/login")
    async def login(request: Request) -> Response:
        fields = await web.form(request, None)
        if not web.sessions.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), fields.get("csrf", "")):
            raise BadCsrf
        secret = fields.get("token", "").strip()

        def check(db: DbSession) -> tuple[int, str, str]:
            token, user = auth.verify(db, secret)
            if token.scope != auth.USER_SCOPE:
                raise Forbidden(f"sign in with a user token; this one is scoped to {token.scope}")
            return user.id, user.username, token.id

        try:
            user_id, username, token_id = await web.read_anonymous(check)
        except (Forbidden, auth.Unauthenticated) as e:
            cookie, csrf = web.sessions.login_nonce()
            context = {"next": _next(fields.get("next")), "login_csrf": csrf, "error": str(e)}
            page = web.page(request, None, "login.html", context, 401)
            page.set_cookie(LOGIN_COOKIE, cookie, max_age=3600, path=PREFIX, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")  # fmt: skip
            return page
        cookie, _ = await run_in_threadpool(web.sessions.open, user_id, username, token_id)
        response = redirect(_next(fields.get("next")))
        response.set_cookie(COOKIE, cookie, max_age=SESSION_TTL_S, path=PREFIX, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")  # fmt: skip
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = await web.session(request)
        await web.form(request, session)
        await run_in_threadpool(web.sessions.close, request.cookies.get(COOKIE))
        response = redirect(PREFIX + "/login")
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    @router.get("")
    @router.get("/")
    async def home() -> Response:
        return redirect(PREFIX + "/resources")

    @router.get("/resources")
    async def resources(
        request: Request, scope: str = "all", type: str = "", q: str = "", offset: str | None = None
    ) -> Response:
        session = await web.session(request)
        scope = scope if scope in queries.SCOPES else "all"
        start = _offset(offset)

        def read(db: DbSession, caller: Caller) -> dict[str, Any]:
            page = queries.resources(db, caller, scope, type[:128] or None, q[:128] or None, start)
            return {"page": page, "types": queries.resource_types(db, caller)}

        data = await web.read(session, read)
        context = {
            **data,
            "scope": scope,
            "type": type,
            "q": q,
            "scopes": queries.SCOPES,
            "size": queries.PAGE_SIZE,
        }
        return web.page(request, session, "resources.html", context)

    @router.get("/resources/{owner}/{name}")
    async def resource(request: Request, owner: str, name: str, a: str | None = None, b: str | None = None,
                       done: str | None = None) -> Response:  # fmt: skip
        session = await web.session(request)
        old, new = _version_arg(a), _version_arg(b)
        data = await web.read(session, lambda db, caller: _resource_page(db, caller, owner, name, old, new))
        return web.page(request, session, "resource.html", {**data, "done": DONE.get(done or "")})

    @router.post("/resources/{owner}/{name}/share")
    async def share(request: Request, owner: str, name: str) -> Response:
        session = await web.session(request)
        fields = await web.form(request, session)
        username, access = fields.get("username", "").strip(), fields.get("access_level", "")
        if access not in ("read", "write", "denied"):
            raise InvalidInput(f"invalid access level {shown(access)}: use read, write or denied")
        await web.write(session, lambda db, caller: registry.share(db, caller, owner, name, username, access))
        return redirect(f"{PREFIX}/resources/{owner}/{name}?done=shared")

    @router.post("/resources/{owner}/{name}/revoke")
    async def revoke(request: Request, owner: str, name: str) -> Response:
        session = await web.session(request)
        username = (await web.form(request, session)).get("username", "")
        await web.write(session, lambda db, caller: registry.unshare(db, caller, owner, name, username))
        return redirect(f"{PREFIX}/resources/{owner}/{name}?done=revoked")

    @router.post("/resources/{owner}/{name}/visibility")
    async def visibility(request: Request, owner: str, name: str) -> Response:
        session = await web.session(request)
        chosen = check_visibility((await web.form(request, session)).get("visibility", ""))
        await web.write(session, lambda db, caller: registry.set_visibility(db, caller, owner, name, chosen))
        return redirect(f"{PREFIX}/resources/{owner}/{name}?done=visibility")

    @router.get("/secrets")
    async def secrets(request: Request, offset: str | None = None) -> Response:
        session = await web.session(request)
        start = _offset(offset)
        rows, total = await web.read(session, lambda db, caller: queries.secrets(db, caller, start))
        context = {"rows": rows, "total": total, "offset": start, "size": queries.PAGE_SIZE}
        return web.page(request, session, "secrets.html", context)

    async def tokens_page(request: Request, created: tuple[Token, str] | None, done: str | None) -> Response:
        session = await web.session(request)
        rows = await web.read(session, queries.tokens)
        context = {
            "tokens": rows,
            "created": created,
            "current": session.token_id,
            "done": DONE.get(done or ""),
        }
        return web.page(request, session, "tokens.html", context)

    @router.get("/tokens")
    async def tokens(request: Request, done: str | None = None) -> Response:
        return await tokens_page(request, None, done)

    @router.post("/tokens")
    async def create_token(request: Request) -> Response:
        session = await web.session(request)
        fields = await web.form(request, session)
        name = fields.get("name", "").strip()[:128] or None
        days = fields.get("expires_days", "").strip()
        if days and not (days.isdigit() and 1 <= int(days) <= 366):
            raise InvalidInput(
                f"expires in {shown(days)} days: give a whole number of days from 1 to 366, or nothing"
            )
        expires_s = int(days) * 86400 if days else None
        created = await web.write(
            session, lambda db, caller: auth.mint(db, caller.user_id, auth.USER_SCOPE, name, expires_s)
        )
        return await tokens_page(request, created, None)

    @router.post("/tokens/{token_id}/revoke")
    async def revoke_token(request: Request, token_id: str) -> Response:
        session = await web.session(request)
        await web.form(request, session)

        def work(db: DbSession, caller: Caller) -> None:
            row = db.get(Token, token_id[:32])
            if row is None or row.user_id != caller.user_id:
                raise NotFound(f"you ({caller.username}) have no token with id {shown(token_id)}")
            row.revoked = True
            db.execute(delete(DashboardSession).where(DashboardSession.token_id == row.id))

        await web.write(session, work)
        return redirect(f"{PREFIX}/tokens?done=token-revoked")
