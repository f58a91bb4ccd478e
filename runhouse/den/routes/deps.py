"""FastAPI dependencies of Den's routes: the database, and who is calling with which token scope.

A route declares what it accepts by the type of its caller parameter: :data:`UserCaller` (user
tokens only), :data:`DaemonCaller` (a cluster daemon's token) or :data:`AnyCaller` (either).
``cluster:`` tokens are refused everywhere; they are only checked on a daemon's behalf.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runhouse.den.auth import Caller, verify
from runhouse.den.db import Database
from runhouse.den.errors import Forbidden, Unauthenticated

bearer = HTTPBearer(auto_error=False, description="A Den token: `Authorization: Bearer <token>`.")


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


Db = Annotated[Database, Depends(database)]


def authenticate(
    db: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    if credentials is None:
        raise Unauthenticated("missing token: send the header 'Authorization: Bearer <your Den token>'")
    with db.read() as session:
        token, user = verify(session, credentials.credentials)
        return Caller(user.id, user.username, token.id, token.scope)


def _scoped_refusal(caller: Caller) -> Forbidden:
    if caller.kind == "cluster":
        return Forbidden(f"this token is scoped to cluster {caller.cluster}; use your user token")
    cluster = caller.cluster or ""
    return Forbidden(
        f"this token is the daemon token of cluster {cluster}; it may only call POST /v1/auth/check, "
        f"POST /v1/clusters{cluster}/heartbeat and POST /v1/events. Use a user token for this route"
    )


def user_caller(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if caller.kind != "user":
        raise _scoped_refusal(caller)
    return caller


def daemon_caller(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if caller.kind != "daemon":
        raise Forbidden(
            f"only a cluster daemon's token may call this route; {caller.username} sent a "
            f"{caller.kind} token (mint one with POST /v1/clusters/OWNER/NAME/daemon-token)"
        )
    return caller


def user_or_daemon_caller(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if caller.kind == "cluster":
        raise _scoped_refusal(caller)
    return caller


UserCaller = Annotated[Caller, Depends(user_caller)]
DaemonCaller = Annotated[Caller, Depends(daemon_caller)]
AnyCaller = Annotated[Caller, Depends(user_or_daemon_caller)]
