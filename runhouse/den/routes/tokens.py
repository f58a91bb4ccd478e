"""``/v1/me``, ``/v1/tokens*``, daemon tokens and ``/v1/auth/check``."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from runhouse.den import auth, registry
from runhouse.den.auth import Caller
from runhouse.den.errors import Forbidden, NotFound
from runhouse.den.limits import shown, text_problem
from runhouse.den.models import Token, as_utc
from runhouse.den.names import Level, parse_uri, uri
from runhouse.den.routes.deps import DaemonToken, Db, UserToken
from runhouse.den.schemas import (
    AuthCheck,
    AuthCheckResult,
    ClusterTokenCreate,
    Me,
    Revoked,
    TokenCreate,
    TokenCreated,
    TokenInfo,
)

router = APIRouter(prefix="/v1", tags=["tokens"])


def _created(row: Token, secret: str) -> TokenCreated:
    return TokenCreated(
        id=row.id, token=secret, name=row.name, scope=row.scope, expires_at=as_utc(row.expires_at)
    )


@router.get("/me")
async def me(token: UserToken, db: Db) -> Me:
    """Who the token belongs to."""
    return await db.read(token, lambda _session, caller: Me(username=caller.username))


@router.post("/tokens")
async def create_token(body: TokenCreate, token: UserToken, db: Db) -> TokenCreated:
    """Mint another user token for the caller (shown once)."""

    def work(session: Session, caller: Caller) -> TokenCreated:
        return _created(*auth.mint(session, caller.user_id, auth.USER_SCOPE, body.name, body.expires_in_s))

    return await db.write(token, work)


@router.get("/tokens")
async def list_tokens(token: UserToken, db: Db) -> list[TokenInfo]:
    """The caller's tokens of every scope, without their secrets."""

    def read(session: Session, caller: Caller) -> list[TokenInfo]:
        rows = session.execute(
            select(Token).where(Token.user_id == caller.user_id).order_by(Token.created_at, Token.id)
        ).scalars()
        return [
            TokenInfo(
                id=t.id,
                name=t.name,
                scope=t.scope,
                created_at=as_utc(t.created_at),  # type: ignore[arg-type]
                expires_at=as_utc(t.expires_at),
                revoked=t.revoked,
            )
            for t in rows
        ]

    return await db.read(token, read)


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, token: UserToken, db: Db) -> Revoked:
    """Revoke one of the caller's tokens; Den refuses it from then on (401)."""

    def work(session: Session, caller: Caller) -> Revoked:
        row = None if text_problem(token_id) else session.get(Token, token_id)
        if row is None or row.user_id != caller.user_id:
            raise NotFound(f"you ({caller.username}) have no token with id {shown(token_id)}")
        row.revoked = True
        return Revoked(revoked=True)

    return await db.write(token, work)


@router.post("/tokens/cluster")
async def create_cluster_token(body: ClusterTokenCreate, token: UserToken, db: Db) -> TokenCreated:
    """A token to hand to cluster /o/n's daemon instead of the user token.

    Any user may get one for a saved cluster: it only tells that daemon who the caller is, and the
    daemon still asks Den what they may do (read on one function deployed there lets them call it)."""
    owner, name = parse_uri(body.cluster)

    def work(session: Session, caller: Caller) -> TokenCreated:
        registry.require_resource(session, owner, name)
        scope = auth.cluster_scope(uri(owner, name))
        return _created(*auth.mint(session, caller.user_id, scope, body.name, body.expires_in_s))

    return await db.write(token, work)


@router.post("/clusters/{owner}/{name}/daemon-token")
async def create_daemon_token(owner: str, name: str, token: UserToken, db: Db) -> TokenCreated:
    """The credential cluster /owner/name's daemon uses with Den; needs write on the cluster."""

    def work(session: Session, caller: Caller) -> TokenCreated:
        resource = registry.require_resource(session, owner, name)
        registry.require_access(session, caller, resource, owner, "write")
        scope = auth.daemon_scope(uri(owner, name))
        return _created(*auth.mint(session, caller.user_id, scope, f"daemon {uri(owner, name)}"[:128]))

    return await db.write(token, work)


def _subject_level(session: Session, daemon: Caller, subject: Caller, resource_uri: str) -> Level:
    if subject.kind == "daemon":
        raise Forbidden("the token to check is a daemon token; send the caller's user or cluster token")
    if subject.kind == "cluster" and subject.cluster != daemon.cluster:
        raise Forbidden(
            f"the token to check is scoped to cluster {subject.cluster}, not to this daemon's "
            f"cluster {daemon.cluster}"
        )
    owner, name = parse_uri(resource_uri)
    resource = registry.find_resource(session, owner, name)
    if resource is None:
        return "none"
    return registry.access_level(session, subject.user_id, resource)


@router.post("/auth/check")
async def check(body: AuthCheck, token: DaemonToken, db: Db) -> AuthCheckResult:
    """For a daemon: who sent this token, and what may they do on ``resource``?"""

    def read(session: Session, daemon: Caller) -> AuthCheckResult:
        subject_token, user = auth.verify(session, body.token)
        subject = Caller(user.id, user.username, subject_token.id, subject_token.scope)
        level = _subject_level(session, daemon, subject, body.resource or daemon.cluster or "")
        return AuthCheckResult(username=user.username, access_level=level)

    return await db.read(token, read)
