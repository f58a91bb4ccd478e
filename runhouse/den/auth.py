"""Tokens and callers: minting, checking a presented token, and what each token scope may call.

A token is ``rhd_`` plus 32 random bytes (url-safe base64); Den keeps only its SHA-256 hex, so a
leaked database does not leak credentials. Scopes (docs/den-api.md):

- ``user``: the user themself, on every route.
- ``cluster:/o/n``: a token a user hands to cluster /o/n's daemon; Den refuses it on every route and
  accepts it only as the subject of that daemon's ``POST /v1/auth/check``.
- ``daemon:/o/n``: the daemon's own credential: auth checks, its heartbeat and usage events.

Routes declare which scopes they accept with the dependencies in :mod:`runhouse.den.routes.deps`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from runhouse.den.errors import Unauthenticated
from runhouse.den.limits import check_token_lifetime
from runhouse.den.models import Token, User, as_utc, utc_now

TOKEN_PREFIX = "rhd_"
USER_SCOPE = "user"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cluster_scope(cluster_uri: str) -> str:
    return f"cluster:{cluster_uri}"


def daemon_scope(cluster_uri: str) -> str:
    return f"daemon:{cluster_uri}"


def mint(
    session: Session,
    user_id: int,
    scope: str = USER_SCOPE,
    name: str | None = None,
    expires_in_s: int | None = None,
) -> tuple[Token, str]:
    """Store a new token for ``user_id``; returns its row and the secret (shown once, never stored).

    ``expires_in_s`` is bounded (:data:`~runhouse.den.limits.MAX_TOKEN_LIFETIME_S`), so an expiry
    always fits the database's timestamps; None mints a token that does not expire."""
    check_token_lifetime(expires_in_s)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utc_now()
    row = Token(
        id=secrets.token_hex(8),
        user_id=user_id,
        name=name,
        token_hash=hash_token(secret),
        scope=scope,
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in_s) if expires_in_s else None,
        revoked=False,
    )
    session.add(row)
    session.flush()
    return row, secret


def verify(session: Session, secret: str) -> tuple[Token, User]:
    """The token row and its user for a presented secret; 401 unless it is live."""
    found = session.execute(
        select(Token, User).join(User, Token.user_id == User.id).where(Token.token_hash == hash_token(secret))
    ).first()
    if found is None:
        raise Unauthenticated(
            "invalid token: this Den does not know it. Check the token you configured, or mint a new "
            "one (`runhouse den token add USER` where Den runs)"
        )
    token, user = found.tuple()
    if token.revoked:
        raise Unauthenticated(f"token {token.id} was revoked; use another token or mint a new one")
    if token.expires_at is not None and token.expires_at <= utc_now():
        expired = as_utc(token.expires_at)
        raise Unauthenticated(
            f"token {token.id} expired at {expired.isoformat() if expired else ''}; mint a new one"
        )
    return token, user


@dataclass(frozen=True)
class Caller:
    """Who is calling, and with which token."""

    user_id: int
    username: str
    token_id: str
    scope: str

    @property
    def kind(self) -> str:
        """``user``, ``cluster`` or ``daemon``."""
        return self.scope.split(":", 1)[0]

    @property
    def cluster(self) -> str | None:
        """The cluster URI a ``cluster:`` or ``daemon:`` token is bound to."""
        return self.scope.split(":", 1)[1] if ":" in self.scope else None
