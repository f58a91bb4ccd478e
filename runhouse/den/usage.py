"""Usage events (who brought which cluster up, tore it down, deployed or called what) and their
aggregation, shared by ``GET /v1/usage`` and ``runhouse den usage``.

Events are stored one row per report; the aggregate sums ``count`` per (user, cluster, kind,
resource) with the first and last time seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runhouse.den.errors import InvalidInput
from runhouse.den.limits import shown
from runhouse.den.models import UsageEvent, utc_now

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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


def record(session: Session, events: list[NewEvent]) -> int:
    now = utc_now()
    session.add_all(
        UsageEvent(
            username=e.username, cluster=e.cluster, kind=e.kind, resource=e.resource, count=e.count, at=now
        )
        for e in events
    )
    return len(events)


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
