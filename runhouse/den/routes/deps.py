"""FastAPI dependencies of Den's routes: the database, and the token a request presents.

A route declares which token scopes it accepts by the type of its token parameter:
:data:`UserToken` (user tokens only), :data:`DaemonToken` (a cluster daemon's token) or
:data:`AnyToken` (either). ``cluster:`` tokens are refused everywhere; Den only checks them on a
daemon's behalf (``POST /v1/auth/check``).

The token is verified inside the route's own transaction, on the thread that runs it:
``await db.read(token, work)`` calls ``work(session, caller)`` after checking the token, all in one
thread-pool hop. Routes are ``async def`` for the same reason: FastAPI runs each sync
dependency, each sync route and the validation of its reply in separate hops, and on a small
machine every hop costs more than the queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from runhouse.den.auth import Caller, verify
from runhouse.den.db import Database
from runhouse.den.errors import Forbidden, Unauthenticated

T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="A Den token: `Authorization: Bearer <token>`.")


@dataclass(frozen=True)
class Presented:
    """The token a request carries and the scopes (``user``, ``daemon``) its route accepts."""

    secret: str
    accepts: tuple[str, ...]

    def caller(self, session: Session) -> Caller:
        """Who is calling; 401 for a dead token, 403 for one of a scope this route refuses."""
        token, user = verify(session, self.secret)
        caller = Caller(user.id, user.username, token.id, token.scope)
        if caller.kind not in self.accepts:
            raise _refusal(caller, self.accepts)
        return caller


def _refusal(caller: Caller, accepts: tuple[str, ...]) -> Forbidden:
    if caller.kind == "cluster":
        return Forbidden(f"this token is scoped to cluster {caller.cluster}; use your user token")
    if caller.kind == "daemon":
        cluster = caller.cluster or ""
        return Forbidden(
            f"this token is the daemon token of cluster {cluster}; it may only call POST /v1/auth/check, "
            f"POST /v1/clusters{cluster}/heartbeat and POST /v1/events. Use a user token for this route"
        )
    return Forbidden(
        f"only a cluster daemon's token may call this route; {caller.username} sent a {caller.kind} "
        "token (a writer of the cluster mints one with POST /v1/clusters/OWNER/NAME/daemon-token)"
    )


class Store:
    """Den's database as routes use it: each call runs ``work(session, caller)`` in one transaction
    on a worker thread, after verifying the token (see :meth:`Database.write` for write retries)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _read(self, token: Presented, work: Callable[[Session, Caller], T]) -> T:
        with self.db.read() as session:
            return work(session, token.caller(session))

    async def read(self, token: Presented, work: Callable[[Session, Caller], T]) -> T:
        return await run_in_threadpool(self._read, token, work)

    async def write(self, token: Presented, work: Callable[[Session, Caller], T]) -> T:
        return await run_in_threadpool(self.db.write, lambda session: work(session, token.caller(session)))


async def store(request: Request) -> Store:
    found: Store = request.app.state.store
    return found


def _presented(credentials: HTTPAuthorizationCredentials | None, *accepts: str) -> Presented:
    if credentials is None:
        raise Unauthenticated("missing token: send the header 'Authorization: Bearer <your Den token>'")
    return Presented(credentials.credentials, accepts)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def user_token(credentials: Credentials) -> Presented:
    return _presented(credentials, "user")


async def daemon_token(credentials: Credentials) -> Presented:
    return _presented(credentials, "daemon")


async def any_token(credentials: Credentials) -> Presented:
    return _presented(credentials, "user", "daemon")


Db = Annotated[Store, Depends(store)]
UserToken = Annotated[Presented, Depends(user_token)]
DaemonToken = Annotated[Presented, Depends(daemon_token)]
AnyToken = Annotated[Presented, Depends(any_token)]
