"""Usage events (who brought which cluster up, tore it down, deployed or called what) and their
aggregation, shared by ``GET /v1/usage`` and ``runhouse den usage``.

Events are stored one row per report; the aggregate sums ``count`` per (user, cluster, kind,
resource) with the first and last time seen. :func:`record` also adds each report to its hour's
``usage_hours`` row in the same transaction, so the dashboard's charts read hourly sums instead of
every event and always agree with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from runhouse.den.errors import InvalidInput
from runhouse.den.limits import shown
from runhouse.den.models import UsageEvent, UsageHour, utc_now

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


def record(session: Session, events: list[NewEvent]) -> int:
    """Store ``events`` (all at one time, now) and add them to their hourly sums."""
    now = utc_now()
    session.add_all(
        UsageEvent(
            username=e.username, cluster=e.cluster, kind=e.kind, resource=e.resource, count=e.count, at=now
        )
        for e in events
    )
    sums: dict[tuple[str, str, str], int] = {}
    for e in events:
        key = (e.cluster, e.username, e.kind)
        sums[key] = sums.get(key, 0) + e.count
    if sums:
        _add_hourly(session, hour_of(now), now, sums)
    return len(events)


def _add_hourly(session: Session, hour: int, at: datetime, sums: dict[tuple[str, str, str], int]) -> None:
    # One upsert; rows in key order so that concurrent reports lock shared rows in the same order
    # (a deadlock that happens anyway is retried by Database.write).
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    later = func.greatest if dialect == "postgresql" else func.max  # SQLite's max(a, b) is scalar
    rows = [
        {"hour": hour, "cluster": c, "username": u, "kind": k, "count": n, "first_at": at, "last_at": at}
        for (c, u, k), n in sorted(sums.items())
    ]
    statement = insert(UsageHour).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[UsageHour.hour, UsageHour.cluster, UsageHour.username, UsageHour.kind],
            set_={
                "count": UsageHour.count + statement.excluded.count,
                "last_at": later(UsageHour.last_at, statement.excluded.last_at),
            },
        )
    )


def aggregate(session: Session, cluster: str | None = None, since: datetime | None = None) -> list[Aggregate]:
    keys = (UsageEvent.username, UsageEvent.cluster, UsageEvent.kind, UsageEvent.resource)
    query = (
        select(*keys, func.sum(UsageEvent.count), func.min(UsageEvent.at), func.max(UsageEvent.at))
        .group_by(*keys)
        .order_by(UsageEvent.cluster, UsageEvent.username, UsageEvent.kind, UsageEvent.resource)
    )
    if cluster is not None:
        query = query.where(UsageEvent.cluster == cluster)
    if since is not None:
        query = query.where(UsageEvent.at >= since)
    return [
        Aggregate(user, cl, kind, resource, int(count), first, last)
        for user, cl, kind, resource, count, first, last in session.execute(query).tuples()
    ]
