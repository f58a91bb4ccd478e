"""Dashboard sign-in sessions and their CSRF tokens.

Signing in with a Den user token opens a session: the browser gets a cookie holding a random
session id (256 bits) with an HMAC of it, ``HttpOnly`` (scripts cannot read it) and
``SameSite=Strict`` (other sites cannot make the browser send it). Den keeps sessions in its
database (``dashboard_sessions``), by the SHA-256 of the id only, with the user, the *id* of the
token they signed in with (never the token itself), the session's CSRF token and its times. Each
request reads the row and the token: an unknown, expired or signed-out session, or one whose token
is revoked or expired, is refused (and its row deleted); expired rows are also swept whenever a
session opens. Each session has its own CSRF token, put in a hidden field of every form and checked
on every POST; the sign-in form itself is protected the same way by a short-lived pre-session cookie.

Cookies are signed with a key derived from the vault's (:meth:`runhouse.den.vault.Vault.subkey`:
``RH_DEN_SECRET_KEY`` or ``secret.key`` in the data dir), so every Den process on the same data dir
and database signs alike and a restart keeps everyone signed in. A session lasts at most
:data:`SESSION_TTL_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession

from runhouse.den.auth import USER_SCOPE
from runhouse.den.db import Database
from runhouse.den.models import DashboardSession, Token, User, utc_now

COOKIE = "rhd_session"
LOGIN_COOKIE = "rhd_login"
SESSION_TTL_S = 12 * 3600
LOGIN_TTL_S = 3600
SEEN_EVERY_S = 60  # last_seen_at is written at most this often per session
KEY_PURPOSE = "dashboard-cookies"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who, with which token (by id), and the CSRF token of its forms."""

    user_id: int
    username: str
    token_id: str
    csrf: str
    expires: datetime


def _token_live(token: Token | None, now: datetime) -> bool:
    return (
        token is not None
        and not token.revoked
        and token.scope == USER_SCOPE
        and (token.expires_at is None or token.expires_at > now)
    )


class SessionStore:
    """Sessions in the database by the hash of their id, and the cookie codec (HMAC with ``key``).

    Its methods do blocking database work: call them from a worker thread."""

    def __init__(self, db: Database, key: bytes) -> None:
        self._db = db
        self._key = key

    def _sign(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def _unsign(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie or len(cookie) > 512:
            return None
        value, signature = cookie.rsplit(".", 1)
        return value if hmac.compare_digest(self._sign(value), signature) else None

    def open(self, user_id: int, username: str, token_id: str) -> tuple[str, Session]:
        """A new session (stored); returns the cookie value and the session. Sweeps expired rows."""
        session_id = secrets.token_urlsafe(32)
        now = utc_now()
        expires = now + timedelta(seconds=SESSION_TTL_S)
        session = Session(user_id, username, token_id, secrets.token_urlsafe(32), expires)

        def work(db: DbSession) -> None:
            db.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
            db.add(
                DashboardSession(
                    id_hash=_digest(session_id),
                    user_id=user_id,
                    token_id=token_id,
                    csrf=session.csrf,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                )
            )

        self._db.write(work)
        return f"{session_id}.{self._sign(session_id)}", session

    def get(self, cookie: str | None) -> Session | None:
        """The live session the cookie names, or None. Refused (and deleted): unknown, expired, or
        its sign-in token revoked or expired."""
        session_id = self._unsign(cookie)
        if session_id is None:
            return None
        key = _digest(session_id)
        now = utc_now()
        with self._db.read() as db:
            found = db.execute(
                select(DashboardSession, User.username, Token)
                .join(User, User.id == DashboardSession.user_id)
                .outerjoin(Token, Token.id == DashboardSession.token_id)
                .where(DashboardSession.id_hash == key)
            ).one_or_none()
            if found is None:
                return None
            row, username, token = found
            live = row.expires_at > now and _token_live(token, now)
            session = Session(row.user_id, username, row.token_id, row.csrf, row.expires_at)
            stale = (now - row.last_seen_at).total_seconds() >= SEEN_EVERY_S
        if not live:
            self._db.write(
                lambda db: db.execute(delete(DashboardSession).where(DashboardSession.id_hash == key))
            )
            return None
        if stale:
            self._db.write(
                lambda db: db.execute(
                    update(DashboardSession).where(DashboardSession.id_hash == key).values(last_seen_at=now)
                )
            )
        return session

    def close(self, cookie: str | None) -> None:
        """Sign out: delete the cookie's session row."""
        session_id = self._unsign(cookie)
        if session_id is not None:
            key = _digest(session_id)
            self._db.write(
                lambda db: db.execute(delete(DashboardSession).where(DashboardSession.id_hash == key))
            )

    def login_nonce(self) -> tuple[str, str]:
        """For the sign-in form: a pre-session cookie value and the CSRF token that matches it."""
        nonce = f"{secrets.token_urlsafe(16)}:{int(time.time())}"
        return f"{nonce}.{self._sign(nonce)}", self._sign("login:" + nonce)

    def login_csrf_ok(self, cookie: str | None, csrf: str) -> bool:
        nonce = self._unsign(cookie)
        if nonce is None:
            return False
        issued = int(nonce.rsplit(":", 1)[1])
        fresh = time.time() - issued < LOGIN_TTL_S
        return fresh and hmac.compare_digest(self._sign("login:" + nonce), csrf)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), (presented or "").encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
