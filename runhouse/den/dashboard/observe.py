"""The dashboard's cluster and usage pages, and the usage CSV export.

A cluster's state comes from its last heartbeat (see :func:`state`); its envs, objects, running
calls and autostop are read from the status its daemon reports, when the daemon reports them.
Usage is charted per time bucket over a chosen range, by user or by cluster, for the clusters the
caller may read (the rule of ``GET /v1/usage``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session as DbSession

from runhouse.den import registry
from runhouse.den.auth import Caller
from runhouse.den.dashboard import charts, queries, sums
from runhouse.den.dashboard.web import SECURITY_HEADERS, Web
from runhouse.den.errors import InvalidInput
from runhouse.den.models import utc_now
from runhouse.den.names import parse_uri, uri

STALE_S = 180.0  # three missed heartbeats at the daemon's default 60 s: the cluster is down
IDLE_S = 600.0  # up, but no call for ten minutes
RANGES: dict[str, tuple[timedelta, int]] = {
    "24h": (timedelta(hours=24), 24),
    "7d": (timedelta(days=7), 28),
    "30d": (timedelta(days=30), 30),
    "90d": (timedelta(days=90), 30),
}
KINDS = (("call", "Calls"), ("deploy", "Deploys"), ("cluster_up", "Launches"), ("cluster_down", "Teardowns"))


@dataclass(frozen=True)
class ClusterView:
    """What the dashboard shows of a cluster, read from its last heartbeat."""

    owner: str
    name: str
    visibility: str
    state: str
    last_seen: datetime | None
    seconds_ago: float | None
    envs: list[str]
    objects: list[str]
    running: int | None
    autostop_mins: float | None
    status: dict[str, Any] | None


def state(status: dict[str, Any] | None, seconds_ago: float | None) -> str:
    """``down`` without a heartbeat in :data:`STALE_S`; ``idle`` with none of its calls running and
    none for :data:`IDLE_S`; else ``up``."""
    if status is None or seconds_ago is None or seconds_ago > STALE_S:
        return "down"
    idle_s = status.get("idle_s")
    running = _running(status)
    if isinstance(idle_s, (int, float)) and idle_s >= IDLE_S and not running:
        return "idle"
    return "up"


def _names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return sorted(str(k) for k in value)
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _running(status: dict[str, Any]) -> int | None:
    value = status.get("running_calls", status.get("in_flight"))
    if isinstance(value, list):
        return len(value)
    return value if isinstance(value, int) else None


def view(
    owner: str, name: str, visibility: str, status: dict[str, Any] | None, seen: datetime | None
) -> ClusterView:
    ago = None if seen is None else round((utc_now() - seen).total_seconds(), 1)
    found = status or {}
    autostop = found.get("autostop_mins")
    return ClusterView(
        owner,
        name,
        visibility,
        state(status, ago),
        seen,
        ago,
        _names(found.get("envs", found.get("workers"))),
        _names(found.get("objects")),
        _running(found),
        autostop if isinstance(autostop, (int, float)) else None,
        status,
    )


def window(range_name: str) -> sums.Window:
    """The range ending at the end of the current bucket (so buckets stay put as time passes)."""
    span, buckets = RANGES[range_name]
    step_s = span.total_seconds() / buckets
    now_s = (utc_now() - datetime(1970, 1, 1)).total_seconds()
    end = datetime(1970, 1, 1) + timedelta(seconds=(now_s // step_s + 1) * step_s)
    return sums.Window(end - span, end, buckets)


def _cluster_arg(value: str) -> str | None:
    return uri(*parse_uri(value.strip())) if value.strip() else None


def _usage_page(
    db: DbSession, caller: Caller, range_name: str, by: str, cluster: str | None, closed: sums.ClosedBuckets
) -> dict[str, Any]:
    w = window(range_name)
    found = sums.usage(db, caller, w, by, cluster, closed)
    starts = w.bucket_starts()
    drawn = []
    for kind, title in KINDS:
        series = {name: counts for (k, name), counts in found.series.items() if k == kind}
        drawn.append(charts.stacked(kind, f"{title} per {by}", series, starts))
    return {"charts": drawn, "table": found.table, "rows": found.rows, "starts": starts, "window": w}


def add_routes(router: APIRouter, web: Web) -> None:
    """Clusters, one cluster, usage, usage.csv."""

    @router.get("/clusters")
    async def clusters(request: Request, offset: str | None = None) -> Response:
        session = await web.session(request)
        start = int(offset) if offset and offset.isdigit() and len(offset) < 9 else 0
        rows, total = await web.read(session, lambda db, caller: queries.clusters(db, caller, start))
        views = [view(r.owner, r.name, r.visibility, r.status, r.last_seen) for r in rows]
        context = {"clusters": views, "total": total, "offset": start, "size": queries.PAGE_SIZE}
        return web.page(request, session, "clusters.html", context)

    @router.get("/clusters/{owner}/{name}")
    async def cluster(request: Request, owner: str, name: str) -> Response:
        session = await web.session(request)

        def read(db: DbSession, caller: Caller) -> dict[str, Any]:
            resource = registry.require_resource(db, owner, name)
            registry.require_access(db, caller, resource, owner, "read")
            if resource.resource_type != "cluster":
                raise InvalidInput(f"{uri(owner, name)} is a {resource.resource_type}, not a cluster")
            status, seen = queries.heartbeat(db, resource)
            found = sums.usage(db, caller, window("7d"), "user", uri(owner, name), web.closed)
            cluster = view(owner, name, resource.visibility, status, seen)
            return {"cluster": cluster, "table": found.table, "rows": found.rows, "by": "user"}

        return web.page(request, session, "cluster.html", await web.read(session, read))

    @router.get("/usage")
    async def usage(request: Request, range: str = "7d", by: str = "user", cluster: str = "") -> Response:
        session = await web.session(request)
        range_name = range if range in RANGES else "7d"
        by = by if by in ("user", "cluster") else "user"
        chosen = _cluster_arg(cluster)
        data = await web.read(
            session, lambda db, caller: _usage_page(db, caller, range_name, by, chosen, web.closed)
        )
        context = {**data, "range": range_name, "ranges": list(RANGES), "by": by, "cluster": chosen or ""}
        return web.page(request, session, "usage.html", context)

    @router.get("/usage.csv")
    async def usage_csv(request: Request, range: str = "7d") -> Response:
        session = await web.session(request)
        range_name = range if range in RANGES else "7d"
        rows = await web.read(
            session, lambda db, caller: list(sums.usage_rows(db, caller, window(range_name)))
        )

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(("bucket_start", "username", "cluster", "kind", "count"))
            for row in rows:
                # A leading = + - @ would make a spreadsheet read the cell as a formula.
                writer.writerow([f"'{v}" if isinstance(v, str) and v[:1] in "=+-@" else v for v in row])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue()

        headers = {
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="den-usage-{range_name}.csv"',
        }
        return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)
