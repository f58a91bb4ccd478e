"""The dashboard's reads: pages of resources and clusters, a resource's versions, usage over time.

The API's functions (:mod:`runhouse.den.registry`) load whole rows, configs included, which is
right for one resource and too slow for a page out of 10,000; these select only the columns a page
shows, a page at a time. Who may see what is the API's rule (:func:`level`, checked against
``registry.access_level`` by the dashboard's tests): the owner writes, an explicit share gives
read, write or denied, and otherwise unlisted and public resources are readable by anyone signed
in; listings show one's own, shared (not denied) and public resources.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.orm import Session

from runhouse.den.auth import Caller
from runhouse.den.errors import InvalidInput
from runhouse.den.models import Heartbeat, Resource, ResourceVersion, Share, Token, UsageEvent, User
from runhouse.den.names import Level, parse_uri

Scope = Literal["all", "mine", "shared", "public"]
Q = TypeVar("Q", bound=Select)
SCOPES: tuple[str, ...] = ("all", "mine", "shared", "public")
PAGE_SIZE = 50


def level(user_id: int, owner_id: int, visibility: str, share: str | None) -> Level:
    """The access ``user_id`` has to a resource: the rule of ``registry.access_level``."""
    if owner_id == user_id:
        return "write"
    if share is not None:
        return "none" if share == "denied" else share  # type: ignore[return-value]
    return "read" if visibility in ("unlisted", "public") else "none"


def _listed(caller: Caller, scope: str) -> ColumnElement[bool]:
    mine = Resource.owner_id == caller.user_id
    shared = and_(Resource.owner_id != caller.user_id, Share.access_level.in_(("read", "write")))
    public = and_(
        Resource.owner_id != caller.user_id,
        Resource.visibility == "public",
        or_(Share.access_level.is_(None), Share.access_level != "denied"),
    )
    return {"mine": mine, "shared": shared, "public": public}.get(scope, or_(mine, shared, public))


def _visible(query: Q, caller: Caller, scope: str) -> Q:
    return (
        query.join(User, Resource.owner_id == User.id)
        .outerjoin(Share, and_(Share.resource_id == Resource.id, Share.user_id == caller.user_id))
        .where(_listed(caller, scope))
    )


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
        Row(owner, name, rtype, vis, version, updated, level(caller.user_id, owner_id, vis, share))
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


def readable_clusters(session: Session, caller: Caller, uris: Iterable[str]) -> set[str]:
    """Which of these cluster URIs the caller may see the usage of: their own namespace, or a saved
    cluster they can read (the rule of ``GET /v1/usage``), in one query."""
    readable: set[str] = set()
    wanted: dict[tuple[str, str], str] = {}
    for cluster in uris:
        try:
            owner, name = parse_uri(cluster)
        except InvalidInput:
            continue
        if owner == caller.username:
            readable.add(cluster)
        else:
            wanted[(owner, name)] = cluster
    if not wanted:
        return readable
    query = (
        select(User.username, Resource.name, Resource.owner_id, Resource.visibility, Share.access_level)
        .select_from(Resource)
        .join(User, Resource.owner_id == User.id)
        .outerjoin(Share, and_(Share.resource_id == Resource.id, Share.user_id == caller.user_id))
        .where(User.username.in_({o for o, _ in wanted}), Resource.name.in_({n for _, n in wanted}))
    )
    for owner, name, owner_id, vis, share in session.execute(query).tuples():
        found = wanted.get((owner, name))
        if found and level(caller.user_id, owner_id, vis, share) != "none":
            readable.add(found)
    return readable


@dataclass(frozen=True)
class Window:
    """A time range of the usage page, cut into ``buckets`` equal slices."""

    start: datetime
    end: datetime
    buckets: int

    @property
    def step(self) -> timedelta:
        return (self.end - self.start) / self.buckets

    def bucket_starts(self) -> list[datetime]:
        return [self.start + self.step * i for i in range(self.buckets)]


def _epoch(session: Session, column: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column)
    return func.cast(func.strftime("%s", column), UsageEvent.count.type)


MAX_TABLE_ROWS = 200


@dataclass(frozen=True)
class Usage:
    """Counts per time bucket, kind and user or cluster, and their sums: the table behind the charts."""

    series: dict[tuple[str, str], list[int]]  # (kind, user or cluster) -> count per bucket
    table: list[tuple[str, str, int, datetime, datetime]]  # user or cluster, kind, count, first, last
    rows: int  # rows the table would have before :data:`MAX_TABLE_ROWS`


def usage(session: Session, caller: Caller, window: Window, by: str, cluster: str | None = None) -> Usage:
    """Usage the caller may see in ``window``, per bucket for charts (``by`` ``user`` or
    ``cluster``) and summed per user or cluster and kind for the table (the busiest rows)."""
    in_window = and_(UsageEvent.at >= window.start, UsageEvent.at < window.end)
    if cluster is not None:
        in_window = and_(in_window, UsageEvent.cluster == cluster)
    seen = session.execute(select(UsageEvent.cluster).where(in_window).distinct()).scalars()
    allowed = readable_clusters(session, caller, seen)
    if not allowed:
        return Usage({}, [], 0)
    step_s = window.step.total_seconds()
    start_s = (window.start - datetime(1970, 1, 1)).total_seconds()
    bucket = func.floor((_epoch(session, UsageEvent.at) - literal(start_s)) / literal(step_s))
    key = UsageEvent.username if by == "user" else UsageEvent.cluster
    grouped = (
        select(
            UsageEvent.kind,
            key,
            bucket,
            func.sum(UsageEvent.count),
            func.min(UsageEvent.at),
            func.max(UsageEvent.at),
        )
        .where(in_window, UsageEvent.cluster.in_(sorted(allowed)))
        .group_by(UsageEvent.kind, key, bucket)
    )
    series: dict[tuple[str, str], list[int]] = {}
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for kind, name, index, count, first, last in session.execute(grouped).tuples():
        counts = series.setdefault((kind, name), [0] * window.buckets)
        counts[min(max(int(index), 0), window.buckets - 1)] += int(count)
        seen_first, seen_last = spans.get((kind, name), (first, last))
        spans[(kind, name)] = (min(seen_first, first), max(seen_last, last))
    table = sorted(
        ((name, kind, sum(counts), *spans[(kind, name)]) for (kind, name), counts in series.items()),
        key=lambda row: (-row[2], row[0], row[1]),
    )
    return Usage(series, table[:MAX_TABLE_ROWS], len(table))


def usage_rows(session: Session, caller: Caller, window: Window) -> Iterable[tuple[str, str, str, str, int]]:
    """For the CSV export: (bucket start, user, cluster, kind, count), oldest first."""
    in_window = and_(UsageEvent.at >= window.start, UsageEvent.at < window.end)
    seen = session.execute(select(UsageEvent.cluster).where(in_window).distinct()).scalars()
    allowed = readable_clusters(session, caller, seen)
    if not allowed:
        return []
    step_s = window.step.total_seconds()
    start_s = (window.start - datetime(1970, 1, 1)).total_seconds()
    bucket = func.floor((_epoch(session, UsageEvent.at) - literal(start_s)) / literal(step_s))
    keys = (bucket, UsageEvent.username, UsageEvent.cluster, UsageEvent.kind)
    query = (
        select(*keys, func.sum(UsageEvent.count))
        .where(in_window, UsageEvent.cluster.in_(sorted(allowed)))
        .group_by(*keys)
        .order_by(*keys)
    )
    starts = window.bucket_starts()
    return [
        (starts[min(max(int(i), 0), window.buckets - 1)].isoformat() + "Z", u, c, k, int(n))
        for i, u, c, k, n in session.execute(query).tuples()
    ]


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
