"""Operations an administrator runs where Den runs, straight against its database (no HTTP, no
token): adding users, minting, listing and revoking tokens, and reading usage.

Each opens the database, brings its schema up to date (so the first ``runhouse den user add`` on
a fresh database works before Den was ever started) and runs in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from runhouse.den import auth, registry, usage
from runhouse.den.db import Database
from runhouse.den.errors import Conflict, DenError, NotFound
from runhouse.den.models import Token, User, utc_now
from runhouse.den.names import check_username


@dataclass(frozen=True)
class Minted:
    username: str
    token_id: str
    token: str
    expires_at: datetime | None


def open_database(db_url: str) -> Database:
    """The database at ``db_url`` with its schema brought up to date."""
    db = Database(db_url)
    try:
        db.upgrade()
    except OperationalError as e:
        db.dispose()
        shown = make_url(db_url).render_as_string(hide_password=True)
        raise DenError(f"cannot open the database {shown}: {e.orig}") from e
    return db


def add_user(db: Database, username: str, token_name: str | None = None) -> Minted:
    """Create ``username`` with a first user token."""
    check_username(username)

    def work(session: Session) -> Minted:
        if registry.find_user(session, username) is not None:
            raise Conflict(
                f"user {username!r} already exists; mint another token with `runhouse den token add {username}`"
            )
        user = User(username=username, created_at=utc_now())
        session.add(user)
        session.flush()
        row, secret = auth.mint(session, user.id, auth.USER_SCOPE, token_name)
        return Minted(username, row.id, secret, row.expires_at)

    return db.write(work)


def add_token(
    db: Database, username: str, token_name: str | None = None, expires_in_s: int | None = None
) -> Minted:
    """Mint another user token for an existing user."""

    def work(session: Session) -> Minted:
        user = registry.require_user(session, username)
        row, secret = auth.mint(session, user.id, auth.USER_SCOPE, token_name, expires_in_s)
        return Minted(username, row.id, secret, row.expires_at)

    return db.write(work)


def list_tokens(db: Database, username: str) -> list[Token]:
    with db.read() as session:
        user = registry.require_user(session, username)
        query = select(Token).where(Token.user_id == user.id).order_by(Token.created_at, Token.id)
        rows = list(session.execute(query).scalars())
        session.expunge_all()
        return rows


def revoke_token(db: Database, token_id: str) -> str:
    """Revoke a token by id; returns its owner's username."""

    def work(session: Session) -> str:
        found = session.execute(
            select(Token, User.username).join(User, Token.user_id == User.id).where(Token.id == token_id)
        ).first()
        if found is None:
            raise NotFound(f"no token with id {token_id!r}; list them with `runhouse den token list USER`")
        token, username = found.tuple()
        token.revoked = True
        return username

    return db.write(work)


def list_users(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.execute(select(User.username).order_by(User.username)).scalars())


def usage_report(
    db: Database, cluster: str | None = None, since: datetime | None = None
) -> list[usage.Aggregate]:
    """Usage of every cluster (the administrator's view; no access filtering)."""
    with db.read() as session:
        return usage.aggregate(session, cluster, since)
