"""Dashboard sign-in sessions and their CSRF tokens.

Signing in with a Den user token opens a session: the browser gets a cookie holding a random
session id (256 bits) with an HMAC of it, ``HttpOnly`` (scripts cannot read it) and
``SameSite=Strict`` (other sites cannot make the browser send it). Den keeps only the SHA-256 of
the id, mapped to the user and to the *id* of the token they signed in with (never the token
itself), so revoking that token ends the session too. Each session has its own CSRF token, put in
a hidden field of every form and checked on every POST; the sign-in form itself is protected the
same way by a short-lived pre-session cookie.

Sessions live in this Den process's memory: ``runhouse den start`` serves Den from one process, a
restart signs everyone out, and a session lasts at most :data:`SESSION_TTL_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

COOKIE = "rhd_session"
LOGIN_COOKIE = "rhd_login"
SESSION_TTL_S = 12 * 3600
LOGIN_TTL_S = 3600
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who, with which token (by id), and the CSRF token of its forms."""

    user_id: int
    username: str
    token_id: str
    csrf: str
    expires: float


class SessionStore:
    """Open sessions by the hash of their id, and the cookie codec (HMAC with a per-process key)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _sign(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def _unsign(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        value, signature = cookie.rsplit(".", 1)
        return value if hmac.compare_digest(self._sign(value), signature) else None

    def open(self, user_id: int, username: str, token_id: str) -> tuple[str, Session]:
        """A new session; returns the cookie value and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(user_id, username, token_id, secrets.token_urlsafe(32), time.time() + SESSION_TTL_S)
        with self._lock:
            self._drop_expired()
            self._sessions[_digest(session_id)] = session
        return f"{session_id}.{self._sign(session_id)}", session

    def get(self, cookie: str | None) -> Session | None:
        session_id = self._unsign(cookie)
        if session_id is None:
            return None
        with self._lock:
            session = self._sessions.get(_digest(session_id))
        return session if session is not None and session.expires > time.time() else None

    def close(self, cookie: str | None) -> None:
        session_id = self._unsign(cookie)
        if session_id is not None:
            with self._lock:
                self._sessions.pop(_digest(session_id), None)

    def _drop_expired(self) -> None:
        now = time.time()
        if len(self._sessions) >= MAX_SESSIONS:
            for key in [k for k, s in self._sessions.items() if s.expires <= now]:
                del self._sessions[key]
        if len(self._sessions) >= MAX_SESSIONS:  # still full: the oldest go first
            for key in sorted(self._sessions, key=lambda k: self._sessions[k].expires)[: MAX_SESSIONS // 10]:
                del self._sessions[key]

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
