"""The dashboard's reads: pages of resources and clusters, a resource's versions, usage over time.

The API's functions (:mod:`runhouse.den.registry`) load whole rows, configs included, which is
right for one resource and too slow for a page out of 10,000; these select only the columns a page
shows, a page at a time. Who may see what is the API's rule, from the one place it is written:
``registry.readable_resources`` (in SQL) and ``registry.level_of``. Usage is read by
:mod:`~runhouse.den.dashboard.sums`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from runhouse.den import registry
from runhouse.den.auth import Caller
from runhouse.den.models import Heartbeat, Resource, ResourceVersion, Share, Token, User
from runhouse.den.names import Level

Q = TypeVar("Q", bound=Select)
Scope = Literal["all", "mine", "shared", "public"]
SCOPES: tuple[str, ...] = ("all", "mine", "shared", "public")
PAGE_SIZE = 50


def _visible(query: Q, caller: Caller, scope: str) -> Q:
    """What the caller may list (``registry.readable_resources``), narrowed to one ``scope``."""
    listed = registry.readable_resources(query, caller.user_id)
    others = Resource.owner_id != caller.user_id
    if scope == "mine":
        return listed.where(Resource.owner_id == caller.user_id)
    if scope == "shared":
        return listed.where(others, Share.access_level.in_(("read", "write")))
    if scope == "public":
        return listed.where(others, Resource.visibility == "public")
    return listed


@dataclass(frozen=True)
class Row:
    owner: str
    name: str
    resource_type: str
    visibility: str
    version: int
    updated_at: datetime
    access_level: Level


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    offset: int


def resources(
    session: Session,
    caller: Caller,
    scope: str = "all",
    resource_type: str | None = None,
    search: str | None = None,
    offset: int = 0,
    limit: int = PAGE_SIZE,
) -> Page:
    """A page of what the caller may list, by owner and name; ``search`` matches within names."""
    columns = (
        User.username,
        Resource.name,
        Resource.resource_type,
        Resource.visibility,
        Resource.version,
        Resource.updated_at,
        Resource.owner_id,
        Share.access_level,
    )
    query = _visible(select(*columns).select_from(Resource), caller, scope)
    if resource_type:
        query = query.where(Resource.resource_type == resource_type)
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(Resource.name).like(f"%{escaped}%", escape="\\"))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = [
        Row(
            owner, name, rtype, vis, version, updated, registry.level_of(caller.user_id, owner_id, vis, share)
        )
        for owner, name, rtype, vis, version, updated, owner_id, share in session.execute(
            query.order_by(User.username, Resource.name).offset(offset).limit(limit)
        ).tuples()
    ]
    return Page(rows, int(total), offset)


def resource_types(session: Session, caller: Caller) -> list[str]:
    """The types among what the caller may list, for the type filter."""
    query = _visible(select(Resource.resource_type).select_from(Resource), caller, "all").distinct()
    return sorted(t for (t,) in session.execute(query).tuples())


@dataclass(frozen=True)
class VersionInfo:
    version: int
    created_at: datetime
    created_by: str


def versions(session: Session, resource: Resource, limit: int = 100) -> list[VersionInfo]:
    """The newest ``limit`` versions, without their configs."""
    query = (
        select(ResourceVersion.version, ResourceVersion.created_at, ResourceVersion.created_by)
        .where(ResourceVersion.resource_id == resource.id)
        .order_by(ResourceVersion.version.desc())
        .limit(limit)
    )
    return [VersionInfo(*row) for row in session.execute(query).tuples()]


def version_config(session: Session, resource: Resource, version: int) -> str | None:
    query = select(ResourceVersion.config).where(
        ResourceVersion.resource_id == resource.id, ResourceVersion.version == version
    )
    return session.execute(query).scalar_one_or_none()


@dataclass(frozen=True)
class ClusterRow:
    owner: str
    name: str
    visibility: str
    status: dict[str, Any] | None
    last_seen: datetime | None


def clusters(
    session: Session, caller: Caller, offset: int = 0, limit: int = PAGE_SIZE
) -> tuple[list[ClusterRow], int]:
    """A page of the clusters the caller may list, with their last heartbeat."""
    base = _visible(select(Resource.id).select_from(Resource), caller, "all").where(
        Resource.resource_type == "cluster"
    )
    total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    query = (
        _visible(
            select(User.username, Resource.name, Resource.visibility, Heartbeat.status, Heartbeat.updated_at)
            .select_from(Resource)
            .outerjoin(Heartbeat, Heartbeat.resource_id == Resource.id),
            caller,
            "all",
        )
        .where(Resource.resource_type == "cluster")
        .order_by(User.username, Resource.name)
        .offset(offset)
        .limit(limit)
    )
    rows = [
        ClusterRow(owner, name, vis, _status(text), seen)
        for owner, name, vis, text, seen in session.execute(query).tuples()
    ]
    return rows, int(total)


def heartbeat(session: Session, resource: Resource) -> tuple[dict[str, Any] | None, datetime | None]:
    row = session.get(Heartbeat, resource.id)
    return (None, None) if row is None else (_status(row.status), row.updated_at)


def _status(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    loaded = json.loads(text)
    return loaded if isinstance(loaded, dict) else None


def tokens(session: Session, caller: Caller) -> list[Token]:
    query = select(Token).where(Token.user_id == caller.user_id).order_by(Token.created_at.desc(), Token.id)
    return list(session.execute(query).scalars())


@dataclass(frozen=True)
class SecretRow:
    owner: str
    name: str
    visibility: str
    version: int
    provider: str | None
    keys: list[str]
    shares: list[tuple[str, str]]


def secrets(
    session: Session, caller: Caller, offset: int = 0, limit: int = PAGE_SIZE
) -> tuple[list[SecretRow], int]:
    """A page of the secrets the caller may list: their value *names* (from the config, which never
    holds values) and who they are shared with."""
    base = _visible(select(Resource.id).select_from(Resource), caller, "all").where(
        Resource.resource_type == "secret"
    )
    total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    query = (
        _visible(
            select(
                Resource.id,
                User.username,
                Resource.name,
                Resource.visibility,
                Resource.version,
                Resource.config,
            ).select_from(Resource),
            caller,
            "all",
        )
        .where(Resource.resource_type == "secret")
        .order_by(User.username, Resource.name)
        .offset(offset)
        .limit(limit)
    )
    found = list(session.execute(query).tuples())
    shared: dict[int, list[tuple[str, str]]] = {}
    if found:
        share_query = (
            select(Share.resource_id, User.username, Share.access_level)
            .join(User, Share.user_id == User.id)
            .where(Share.resource_id.in_([row[0] for row in found]))
            .order_by(User.username)
        )
        for resource_id, username, access in session.execute(share_query).tuples():
            shared.setdefault(resource_id, []).append((username, access))
    rows = []
    for resource_id, owner, name, vis, version, text in found:
        config = json.loads(text)
        keys = [str(k) for k in config.get("keys", [])]
        provider = config.get("provider")
        rows.append(SecretRow(owner, name, vis, version, provider, keys, shared.get(resource_id, [])))
    return rows, int(total)
