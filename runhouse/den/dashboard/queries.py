"""The dashboard's reads: pages of resources and clusters, a resource's versions, usage over time.

The API's functions (:mod:`runhouse.den.registry`) load whole rows, configs included, which is
right for one resource and too slow for a page out of 10,000; these select only the columns a page
shows, a page at a time. Who may see what is the API's rule, from the one place it is written:
``registry.readable_resources`` (in SQL) and ``registry.level_of``. Usage is read from the hourly
sums in ``usage_hours``, not from the raw events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.orm import Session

from runhouse.den import registry
from runhouse.den.auth import Caller
from runhouse.den.models import Heartbeat, Resource, ResourceVersion, Share, Token, UsageHour, User
from runhouse.den.names import Level

Q = TypeVar("Q", bound=Select)
Scope = Literal["all", "mine", "shared", "public"]
SCOPES: tuple[str, ...] = ("all", "mine", "shared", "public")
PAGE_SIZE = 50
_EPOCH = datetime(1970, 1, 1)


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


def _readable_usage(caller: Caller) -> ColumnElement[bool]:
    """Usage rows of clusters the caller may read (the rule of ``GET /v1/usage``): in their own
    namespace, or a saved resource they can read (listed or not)."""
    uris = registry.readable_resources(
        select(literal("/") + User.username + "/" + Resource.name).select_from(Resource),
        caller.user_id,
        listed=False,
    )
    return or_(
        UsageHour.cluster.startswith(f"/{caller.username}/", autoescape=True), UsageHour.cluster.in_(uris)
    )


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


MAX_TABLE_ROWS = 200


@dataclass(frozen=True)
class Usage:
    """Counts per time bucket, kind and user or cluster, and their sums: the table behind the charts."""

    series: dict[tuple[str, str], list[int]]  # (kind, user or cluster) -> count per bucket
    table: list[tuple[str, str, int, datetime, datetime]]  # user or cluster, kind, count, first, last
    rows: int  # rows the table would have before :data:`MAX_TABLE_ROWS`


def _hours(
    caller: Caller, window: Window, cluster: str | None
) -> tuple[ColumnElement[Any], ColumnElement[bool]]:
    """The bucket of a ``usage_hours`` row, and the filter to the caller's rows in ``window``."""
    start_h, step_h = (int(t.total_seconds()) // 3600 for t in (window.start - _EPOCH, window.step))
    if (
        start_h * 3600 != (window.start - _EPOCH).total_seconds()
        or step_h * 3600 != window.step.total_seconds()
    ):
        raise ValueError(f"usage is summed per hour; {window} is not cut in whole hours")
    wanted = and_(
        UsageHour.hour >= start_h,
        UsageHour.hour < start_h + step_h * window.buckets,
        _readable_usage(caller),
    )
    if cluster is not None:
        wanted = and_(wanted, UsageHour.cluster == cluster)
    return (UsageHour.hour - start_h) // step_h, wanted


def usage(session: Session, caller: Caller, window: Window, by: str, cluster: str | None = None) -> Usage:
    """Usage the caller may see in ``window``, per bucket for charts (``by`` ``user`` or
    ``cluster``) and summed per user or cluster and kind for the table (the busiest rows), from the
    hourly sums."""
    bucket, wanted = _hours(caller, window, cluster)
    key = UsageHour.username if by == "user" else UsageHour.cluster
    grouped = (
        select(
            UsageHour.kind,
            key,
            bucket,
            func.sum(UsageHour.count),
            func.min(UsageHour.first_at),
            func.max(UsageHour.last_at),
        )
        .where(wanted)
        .group_by(UsageHour.kind, key, bucket)
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
    """For the CSV export: (bucket start, user, cluster, kind, count), oldest first, from the hourly sums."""
    bucket, wanted = _hours(caller, window, None)
    keys = (bucket, UsageHour.username, UsageHour.cluster, UsageHour.kind)
    query = select(*keys, func.sum(UsageHour.count)).where(wanted).group_by(*keys).order_by(*keys)
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
