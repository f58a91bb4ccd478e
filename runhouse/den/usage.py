"""Usage events (who brought which cluster up, tore it down, deployed or called what), their
rollups, who may see which cluster's usage, and the aggregate shared by ``GET /v1/usage`` and
``runhouse den usage``.

Events are stored one row per report. :func:`record` also adds each report, in the same
transaction, to its hour's ``usage_hours`` rows (per cluster, user and kind), its day's
``usage_days`` rows (per cluster, user, kind and resource) and ``usage_clusters``, so readers sum a
few rollup rows instead of every event and always agree with the events. Every event is stamped
with the time it is recorded, so an hour or day that has passed never changes again.

A user may see a cluster's usage if it is in their own namespace or they can read the resource of
that name (:func:`readable_clusters`, the one place this rule is written).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, String, and_, any_, bindparam, func, select, union, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from runhouse.den import registry
from runhouse.den.errors import InvalidInput
from runhouse.den.limits import shown
from runhouse.den.models import Resource, UsageCluster, UsageDay, UsageEvent, UsageHour, User, utc_now
from runhouse.den.names import parse_uri

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class NewEvent:
    username: str
    cluster: str
    kind: str
    resource: str | None
    count: int


@dataclass(frozen=True)
class Aggregate:
    username: str
    cluster: str
    kind: str
    resource: str | None
    count: int
    first: datetime
    last: datetime


def parse_since(text: str) -> datetime:
    """``since`` as naive UTC: unix seconds, an ISO 8601 time (UTC unless it says otherwise), or a
    duration back from now such as ``90m``, ``2h``, ``7d``; 400 for anything else, or for a time
    outside the years 1-9999."""
    value = text.strip()
    try:
        return datetime.fromtimestamp(float(value), timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        relative = _RELATIVE.match(value)
        if relative:
            return utc_now() - timedelta(seconds=float(relative.group(1)) * _UNIT_S[relative.group(2)])
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise InvalidInput(
            f"since={shown(text)} is out of range: give a time between the years 1 and 9999"
        ) from None
    except ValueError:
        raise InvalidInput(
            f"cannot read since={shown(text)}: give unix seconds, an ISO time like 2025-01-31T12:00:00Z, "
            "or a duration like 30m, 2h, 7d"
        ) from None
    return parsed


def hour_of(at: datetime) -> int:
    """Whole hours since 1970-01-01 of a naive UTC time: the ``hour`` of ``usage_hours``."""
    return int((at - _EPOCH).total_seconds() // 3600)


def day_of(at: datetime) -> int:
    """Whole days since 1970-01-01 of a naive UTC time: the ``day`` of ``usage_days``."""
    return int((at - _EPOCH).total_seconds() // 86400)


def day_start(day: int) -> datetime:
    return _EPOCH + timedelta(days=day)


def record(session: Session, events: list[NewEvent]) -> int:
    """Store ``events`` (all at one time, now) and add them to their hour's and day's sums."""
    now = utc_now()
    session.add_all(
        UsageEvent(
            username=e.username, cluster=e.cluster, kind=e.kind, resource=e.resource, count=e.count, at=now
        )
        for e in events
    )
    hourly: dict[tuple[str, ...], int] = {}
    daily: dict[tuple[str, ...], int] = {}
    for e in events:
        hourly[(e.cluster, e.username, e.kind)] = hourly.get((e.cluster, e.username, e.kind), 0) + e.count
        key = (e.cluster, e.username, e.kind, e.resource or "")
        daily[key] = daily.get(key, 0) + e.count
    if events:
        _upsert(session, UsageHour, ("hour", hour_of(now)), ("cluster", "username", "kind"), hourly, now)
        _upsert(
            session, UsageDay, ("day", day_of(now)), ("cluster", "username", "kind", "resource"), daily, now
        )
        _add_clusters(session, sorted({e.cluster for e in events}))
    return len(events)


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _upsert(
    session: Session,
    table: type[UsageHour] | type[UsageDay],
    period: tuple[str, int],
    names: tuple[str, ...],
    sums: dict[tuple[str, ...], int],
    at: datetime,
) -> None:
    """Add ``sums`` (key ``names`` -> count) to ``table``'s rows of one ``period``, in one upsert.
    Rows go in key order so that concurrent reports lock shared rows in the same order (a deadlock
    that happens anyway is retried by Database.write); every report writes hours, then days."""
    # SQLite's two-argument max(a, b) is its scalar greatest.
    later = func.greatest if session.get_bind().dialect.name == "postgresql" else func.max
    rows = [
        {
            period[0]: period[1],
            **dict(zip(names, key, strict=True)),
            "count": n,
            "first_at": at,
            "last_at": at,
        }
        for key, n in sorted(sums.items())
    ]
    statement = _insert(session)(table).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[period[0], *names],
            set_={
                "count": table.count + statement.excluded.count,
                "last_at": later(table.last_at, statement.excluded.last_at),
            },
        )
    )


def _add_clusters(session: Session, clusters: list[str]) -> None:
    rows = [{"cluster": c, **dict(zip(("owner", "name"), parse_uri(c), strict=True))} for c in clusters]
    session.execute(_insert(session)(UsageCluster).values(rows).on_conflict_do_nothing())


def readable_clusters(session: Session, user_id: int, username: str) -> list[str]:
    """The clusters with usage whose usage the user may see, sorted: those in their namespace and
    those whose resource they can read, listed or not (``registry.readable_resources``, in SQL)."""
    own = select(UsageCluster.cluster).where(UsageCluster.owner == username)
    # Each cluster with usage, joined to the resource saved under its owner and name.
    named = (
        select(UsageCluster.cluster)
        .select_from(UsageCluster)
        .join(User, User.username == UsageCluster.owner)
        .join(Resource, and_(Resource.owner_id == User.id, Resource.name == UsageCluster.name))
    )
    saved = registry.readable_resources(named, user_id, listed=False, owner_joined=True)
    return sorted(session.execute(union(own, saved)).scalars())


def aggregate(
    session: Session,
    cluster: str | None = None,
    since: datetime | None = None,
    readable: list[str] | None = None,
) -> list[Aggregate]:
    """Counts per (user, cluster, kind, resource) with the first and last time seen, for one
    ``cluster`` or all, of the ``readable`` clusters (all when None), from ``since`` or all time.

    Whole days are read from ``usage_days``; only the part of ``since``'s day after ``since`` is
    read from the events themselves, so the result is exact to the event. Both are summed in one
    query."""
    first_day = None if since is None else -(-(since - _EPOCH) // timedelta(days=1))  # ceiling
    days = select(
        UsageDay.username,
        UsageDay.cluster,
        UsageDay.kind,
        UsageDay.resource,
        UsageDay.count,
        UsageDay.first_at,
        UsageDay.last_at,
    ).where(*_clusters(session, UsageDay.cluster, cluster, readable))
    parts = [days]
    if since is not None and first_day is not None:
        days = days.where(UsageDay.day >= first_day)
        head = select(
            UsageEvent.username,
            UsageEvent.cluster,
            UsageEvent.kind,
            func.coalesce(UsageEvent.resource, ""),
            UsageEvent.count,
            UsageEvent.at,
            UsageEvent.at,
        ).where(
            *_clusters(session, UsageEvent.cluster, cluster, readable),
            UsageEvent.at >= since,
            UsageEvent.at < day_start(first_day),
        )
        parts = [days, head]
    rows = union_all(*parts).subquery()
    keys = (rows.c.cluster, rows.c.username, rows.c.kind, rows.c.resource)
    query = (
        select(*keys, func.sum(rows.c.count), func.min(rows.c.first_at), func.max(rows.c.last_at))
        .group_by(*keys)
        .order_by(*keys)
    )
    return [
        Aggregate(user, cl, kind, resource or None, int(count), first, last)
        for cl, user, kind, resource, count, first, last in session.execute(query)
    ]


def _clusters(session: Session, column: Any, cluster: str | None, readable: list[str] | None) -> list[Any]:
    wanted = []
    if cluster is not None:
        wanted.append(column == cluster)
    if readable is not None:
        wanted.append(among(session, column, readable))
    return wanted


def among(session: Session, column: Any, values: list[str]) -> ColumnElement[bool]:
    """``column IN values`` with the list as one bound value (a PostgreSQL array, a JSON text that
    SQLite's ``json_each`` reads), so any number of clusters fits in one statement: each database
    limits a statement's bound values (PostgreSQL 65,535, SQLite 32,766)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(String)))
    listed = func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))
