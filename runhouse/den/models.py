"""Den's tables, as SQLAlchemy 2 mapped classes.

The schema itself is created and changed only by the Alembic migrations in ``migrations/``; these
classes must match them (a test compares the two). Times are naive UTC (``utc_now``) so SQLite and
PostgreSQL store and compare them the same way. Configs and statuses are JSON text written by Den
itself; secret values are only ever stored as Fernet ciphertext (``SecretValue``), tokens only as
SHA-256 hex (``Token.token_hash``), dashboard sessions only by the SHA-256 of their id
(``DashboardSession.id_hash``).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_LEN = 128
URI_LEN = 2 * NAME_LEN + 2  # "/owner/name"
SCOPE_LEN = URI_LEN + 16  # "daemon:/owner/name"


def utc_now() -> datetime:
    """Now, as the naive UTC datetime every table stores."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_utc(value: datetime | None) -> datetime | None:
    """A stored (naive UTC) time made timezone-aware for replies."""
    return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Token(Base):
    """A credential. ``scope`` is ``user``, ``cluster:/o/n`` or ``daemon:/o/n`` (see docs/den-api.md)."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(NAME_LEN))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(SCOPE_LEN))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Resource(Base):
    """The latest state of ``/owner/name``; every saved version is also a ``ResourceVersion``."""

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_resources_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    resource_type: Mapped[str] = mapped_column(String(NAME_LEN))
    visibility: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    updated_by: Mapped[str] = mapped_column(String(NAME_LEN))


class ResourceVersion(Base):
    __tablename__ = "resource_versions"
    __table_args__ = (UniqueConstraint("resource_id", "version", name="uq_resource_versions_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(NAME_LEN))


class Share(Base):
    """An explicit grant: ``read``, ``write`` or ``denied`` for one user on one resource."""

    __tablename__ = "shares"

    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    access_level: Mapped[str] = mapped_column(String(8))


class SecretValue(Base):
    """The encrypted values of one version of a secret resource."""

    __tablename__ = "secret_values"

    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)


class Heartbeat(Base):
    """The last status a cluster's daemon (or a writer) reported."""

    __tablename__ = "heartbeats"

    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class UsageEvent(Base):
    """One reported event; ``cluster`` is a URI string so events outlive deleted clusters."""

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_cluster_at", "cluster", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN))
    cluster: Mapped[str] = mapped_column(String(URI_LEN))
    kind: Mapped[str] = mapped_column(String(32))
    resource: Mapped[str | None] = mapped_column(String(URI_LEN))
    count: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)


class UsageHour(Base):
    """Usage events summed per hour, cluster, user and kind, for charts that span up to 90 days.

    ``hour`` counts whole hours since 1970-01-01 UTC, so any range cut into whole hours is summed
    exactly, with integer arithmetic on both databases. :func:`runhouse.den.usage.record` keeps it in
    the transaction that stores the events; migration 0002 filled it from the events before it."""

    __tablename__ = "usage_hours"

    hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster: Mapped[str] = mapped_column(String(URI_LEN), primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime] = mapped_column(DateTime)
    last_at: Mapped[datetime] = mapped_column(DateTime)


class UsageDay(Base):
    """Usage events summed per day, cluster, user, kind and resource (``''`` for none).

    ``day`` counts whole days since 1970-01-01 UTC. It serves ranges cut into whole days (the
    dashboard's 30 and 90 days, through :mod:`runhouse.den.dashboard.sums`) and ``GET /v1/usage``
    (:func:`runhouse.den.usage.aggregate`). Kept like ``usage_hours``; migration 0004 filled it."""

    __tablename__ = "usage_days"
    __table_args__ = (Index("ix_usage_days_cluster_day", "cluster", "day"),)

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster: Mapped[str] = mapped_column(String(URI_LEN), primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    resource: Mapped[str] = mapped_column(String(URI_LEN), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime] = mapped_column(DateTime)
    last_at: Mapped[datetime] = mapped_column(DateTime)


class UsageCluster(Base):
    """Every cluster URI that has usage, split into owner and name, so the rule of which clusters'
    usage a user may see is applied to this short list once per request
    (:func:`runhouse.den.usage.readable_clusters`) rather than to every usage row."""

    __tablename__ = "usage_clusters"

    cluster: Mapped[str] = mapped_column(String(URI_LEN), primary_key=True)
    owner: Mapped[str] = mapped_column(String(NAME_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))


class DashboardSession(Base):
    """A browser signed in to the dashboard (see :mod:`runhouse.den.dashboard.sessions`).

    Keyed by the SHA-256 hex of the session id the cookie holds, never the id itself; ``token_id``
    is the id (not the secret) of the user token signed in with, so revoking it ends the session."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
