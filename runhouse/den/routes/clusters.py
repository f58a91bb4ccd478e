"""Observability: ``POST /v1/events``, ``GET /v1/usage``, cluster heartbeats and status."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from runhouse.den import registry, usage
from runhouse.den.auth import Caller
from runhouse.den.errors import Forbidden, InvalidInput
from runhouse.den.models import Heartbeat as HeartbeatRow
from runhouse.den.models import as_utc, utc_now
from runhouse.den.names import check_username, parse_uri, uri
from runhouse.den.routes.deps import AnyToken, Db, UserToken
from runhouse.den.schemas import MAX_EVENTS, ClusterStatus, Events, Heartbeat, Ok, Recorded, UsageRow

router = APIRouter(prefix="/v1", tags=["clusters"])


def _require_write(session: Session, caller: Caller, cluster_uri: str) -> None:
    """403 unless the user may change ``cluster_uri`` (clusters not saved yet: only in their namespace)."""
    owner, name = parse_uri(cluster_uri)
    if owner == caller.username:
        return
    resource = registry.find_resource(session, owner, name)
    if resource is None:
        raise Forbidden(
            f"user {caller.username} needs write access to cluster {cluster_uri} to record its usage, "
            "and no such cluster is saved in this Den"
        )
    registry.require_access(session, caller, resource, owner, "write")


def _events_of(session: Session, caller: Caller, body: Events) -> list[usage.NewEvent]:
    """The events to store. A daemon token records for its own cluster only, naming the users it
    authenticated; a user records as themself, and only for clusters they may write."""
    found: list[usage.NewEvent] = []
    writable: set[str] = set()
    for event in body.events:
        if caller.kind == "daemon":
            cluster = caller.cluster or ""
            username = check_username(event.username) if event.username else caller.username
        else:
            cluster = uri(*parse_uri(event.cluster))
            if cluster not in writable:
                _require_write(session, caller, cluster)
                writable.add(cluster)
            username = caller.username
        found.append(usage.NewEvent(username, cluster, event.kind, event.resource, event.count))
    return found


@router.post("/events")
async def post_events(body: Events, token: AnyToken, db: Db) -> Recorded:
    """Record usage events: a cluster's daemon token for its own cluster, or a user with write
    access to each cluster named (recorded under the user's own name)."""
    if len(body.events) > MAX_EVENTS:
        raise InvalidInput(f"{len(body.events)} events in one request; send at most {MAX_EVENTS} per request")
    return await db.write(
        token, lambda s, caller: Recorded(recorded=usage.record(s, _events_of(s, caller, body)))
    )


@router.get("/usage")
async def get_usage(
    token: UserToken, db: Db, cluster: str | None = None, since: str | None = None
) -> list[UsageRow]:
    """Usage summed per user, cluster, kind and resource, for the clusters the caller can read
    (``usage.readable_clusters``), from the daily rollup and the events of ``since``'s own day."""
    cluster_uri = uri(*parse_uri(cluster)) if cluster else None
    since_at = usage.parse_since(since) if since else None

    def read(session: Session, caller: Caller) -> list[UsageRow]:
        readable = usage.readable_clusters(session, caller.user_id, caller.username)
        return [
            UsageRow(
                username=a.username,
                cluster=a.cluster,
                kind=a.kind,
                resource=a.resource,
                count=a.count,
                first=as_utc(a.first),  # type: ignore[arg-type]
                last=as_utc(a.last),  # type: ignore[arg-type]
            )
            for a in usage.aggregate(session, cluster_uri, since_at, readable)
        ]

    return await db.read(token, read)


@router.post("/clusters/{owner}/{name}/heartbeat")
async def heartbeat(owner: str, name: str, body: Heartbeat, token: AnyToken, db: Db) -> Ok:
    """Store the cluster's current status (its daemon token, or a user with write)."""
    text = registry.encode_config(body.status, what="status")

    def work(session: Session, caller: Caller) -> Ok:
        if caller.kind == "daemon" and caller.cluster != uri(owner, name):
            raise Forbidden(
                f"this daemon token belongs to cluster {caller.cluster}, not {uri(owner, name)}: a heartbeat "
                "needs that cluster's own daemon token or a user with write access to it"
            )
        resource = registry.require_resource(session, owner, name, lock=True)
        if caller.kind != "daemon":
            registry.require_access(session, caller, resource, owner, "write")
        row = session.get(HeartbeatRow, resource.id)
        if row is None:
            session.add(HeartbeatRow(resource_id=resource.id, status=text, updated_at=utc_now()))
        else:
            row.status, row.updated_at = text, utc_now()
        return Ok(ok=True)

    return await db.write(token, work)


@router.get("/clusters/{owner}/{name}/status")
async def cluster_status(owner: str, name: str, token: UserToken, db: Db) -> ClusterStatus:
    """The last heartbeat's status and how long ago it came; needs read."""

    def read(session: Session, caller: Caller) -> ClusterStatus:
        resource = registry.require_resource(session, owner, name)
        registry.require_access(session, caller, resource, owner, "read")
        row = session.get(HeartbeatRow, resource.id)
        if row is None:
            return ClusterStatus(status=None, last_heartbeat=None, seconds_ago=None)
        return ClusterStatus(
            status=registry.load_config(row.status),
            last_heartbeat=as_utc(row.updated_at),
            seconds_ago=round((utc_now() - row.updated_at).total_seconds(), 3),
        )

    return await db.read(token, read)
