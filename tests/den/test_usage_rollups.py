"""The daily rollup (``usage_days``, ``usage_clusters``; migration 0004) and its readers, on SQLite and
PostgreSQL: the backfill and later reports both land in it, ``GET /v1/usage``'s aggregate and the
dashboard's bucket sums are exact to the event at every boundary, only readable clusters count,
and sums the dashboard remembered are never shown to someone who lost access."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from denserver import DenServer, postgres_url, unique_name
from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session

from runhouse.den import usage
from runhouse.den.auth import Caller
from runhouse.den.dashboard import sums
from runhouse.den.db import MIGRATIONS_DIR, Database
from runhouse.den.models import Resource, Share, UsageCluster, UsageDay, UsageEvent, UsageHour, User, utc_now

from .test_dashboard import Browser, Person

DAY = timedelta(days=1)
D0 = datetime(2026, 3, 10)  # a midnight, UTC
CLUSTERS = ["/ann/own", "/ben/shared", "/ben/private", "/cy/elsewhere"]
READABLE_BY_ANN = ["/ann/own", "/ben/shared"]  # her namespace; ben's shared with her


def _times() -> list[datetime]:
    """Event times on and around every kind of boundary: midnights, 6-hour marks, hours."""
    edges = [D0 + DAY * d + timedelta(hours=h) for d in range(-1, 4) for h in (0, 6, 12, 18)]
    near = [
        t + delta for t in edges for delta in (timedelta(0), timedelta(microseconds=-1), timedelta(seconds=1))
    ]
    rng = random.Random(5)
    spread = [D0 - DAY + timedelta(seconds=rng.uniform(0, 5 * 86400)) for _ in range(40)]
    return sorted(near + spread)


def _events() -> list[dict]:
    rng = random.Random(11)
    return [
        {
            "username": rng.choice(["ann", "ben", "cy"]),
            "cluster": rng.choice(CLUSTERS),
            "kind": rng.choice(["call", "call", "deploy", "cluster_up"]),
            "resource": rng.choice([None, "fn", "/ben/model"]),
            "count": rng.randint(1, 9),
            "at": at,
        }
        for at in _times()
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def old_den(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, list[dict]]]:
    """A Den database at migration 0001 holding :func:`_events`, then upgraded to the head (the
    backfills of 0002 and 0004), with users ann, ben and cy and ben's clusters saved: ``shared`` shared
    with ann for read, ``private`` private."""
    url = postgres_url() if request.param == "postgresql" else f"sqlite:///{tmp_path / 'old.sqlite'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(url)
    events = _events()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.execute(insert(UsageEvent.__table__), events)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    db = Database(url)

    def seed(session: Session) -> None:
        now = utc_now()
        users = {name: User(username=name, created_at=now) for name in ("ann", "ben", "cy")}
        session.add_all(users.values())
        session.flush()
        for name in ("shared", "private"):
            session.add(
                Resource(owner_id=users["ben"].id, name=name, resource_type="cluster", visibility="private",
                         version=1, config="{}", created_at=now, updated_at=now, updated_by="ben")
            )  # fmt: skip
        session.flush()
        shared = session.execute(select(Resource.id).where(Resource.name == "shared")).scalar_one()
        session.add(Share(resource_id=shared, user_id=users["ann"].id, access_level="read"))

    db.write(seed)
    yield db, events
    db.dispose()


def _ann(db: Database) -> Caller:
    with db.read() as session:
        user_id = session.execute(select(User.id).where(User.username == "ann")).scalar_one()
    return Caller(user_id, "ann", "t", "user")


def _expected(events: list[dict], since: datetime | None, clusters: list[str] | None) -> dict:
    found: dict[tuple, list] = {}
    for e in events:
        if (since is None or e["at"] >= since) and (clusters is None or e["cluster"] in clusters):
            key = (e["username"], e["cluster"], e["kind"], e["resource"])
            seen = found.setdefault(key, [0, e["at"], e["at"]])
            seen[0] += e["count"]
            seen[1], seen[2] = min(seen[1], e["at"]), max(seen[2], e["at"])
    return {key: tuple(v) for key, v in found.items()}


def _aggregated(
    db: Database, since: datetime | None, readable: list[str] | None, cluster: str | None = None
) -> dict:
    with db.read() as session:
        rows = usage.aggregate(session, cluster, since, readable)
    return {(a.username, a.cluster, a.kind, a.resource): (a.count, a.first, a.last) for a in rows}


def test_the_backfill_sums_every_event_and_later_reports_add_to_it(
    old_den: tuple[Database, list[dict]],
) -> None:
    db, events = old_den
    with db.read() as session:
        days = {
            (d, c, u, k, r): n
            for d, c, u, k, r, n in session.execute(
                select(
                    UsageDay.day,
                    UsageDay.cluster,
                    UsageDay.username,
                    UsageDay.kind,
                    UsageDay.resource,
                    UsageDay.count,
                )
            )
        }
        clusters = set(session.execute(select(UsageCluster.cluster, UsageCluster.owner, UsageCluster.name)))
    wanted: dict[tuple, int] = {}
    for e in events:
        key = (usage.day_of(e["at"]), e["cluster"], e["username"], e["kind"], e["resource"] or "")
        wanted[key] = wanted.get(key, 0) + e["count"]
    assert days == wanted
    assert clusters == {(c, c.split("/")[1], c.split("/")[2]) for c in CLUSTERS}
    assert _aggregated(db, None, None) == _expected(events, None, None)

    later = [
        usage.NewEvent("ann", "/ann/own", "call", "fn", 4),
        usage.NewEvent("dee", "/dee/new", "deploy", None, 2),
    ]
    db.write(lambda session: usage.record(session, later))
    with db.read() as session:
        stamped = list(
            session.execute(select(UsageEvent.at).where(UsageEvent.username.in_(["dee"]))).scalars()
        )
        assert "/dee/new" in set(session.execute(select(UsageCluster.cluster)).scalars())
        hours = (
            session.execute(select(UsageHour.count).where(UsageHour.cluster == "/dee/new")).scalars().all()
        )
    assert hours == [2]
    added = [
        {"username": e.username, "cluster": e.cluster, "kind": e.kind, "resource": e.resource, "count": e.count,
         "at": stamped[0]}
        for e in later
    ]  # fmt: skip
    assert _aggregated(db, None, None) == _expected(events + added, None, None)
    since = stamped[0] - timedelta(hours=1)
    assert _aggregated(db, since, None) == _expected(added, None, None)


def test_api_aggregate_is_exact_to_the_event_at_every_since(old_den: tuple[Database, list[dict]]) -> None:
    """Whole days come from usage_days and the rest of since's day from the events: a since on a
    midnight, a microsecond either side of it, or on an event's own time counts exactly the
    events at or after it."""
    db, events = old_den
    sinces = [D0 + DAY * d + delta for d in range(-1, 5) for delta in
              (timedelta(0), timedelta(microseconds=-1), timedelta(microseconds=1), timedelta(hours=7))]  # fmt: skip
    sinces += [e["at"] for e in events[::7]]
    for since in sinces:
        assert _aggregated(db, since, None) == _expected(events, since, None), since
        assert _aggregated(db, since, READABLE_BY_ANN) == _expected(events, since, READABLE_BY_ANN), since
    assert _aggregated(db, D0, READABLE_BY_ANN, "/ben/shared") == _expected(events, D0, ["/ben/shared"])
    many = [f"/team{i}/c" for i in range(70_000)] + READABLE_BY_ANN  # past both databases' bound-value limits
    assert _aggregated(db, D0, many) == _expected(events, D0, READABLE_BY_ANN)
    assert _aggregated(db, D0, READABLE_BY_ANN, "/ben/private") == {}


def test_readable_clusters_are_her_namespace_and_what_she_can_read(
    old_den: tuple[Database, list[dict]],
) -> None:
    db, _ = old_den
    ann = _ann(db)
    with db.read() as session:
        assert usage.readable_clusters(session, ann.user_id, "ann") == READABLE_BY_ANN


def _bucketed(events: list[dict], window: sums.Window, by: str, clusters: list[str]) -> dict:
    found: dict[tuple[str, str], list[int]] = {}
    for e in events:
        if e["cluster"] in clusters and window.start <= e["at"] < window.end:
            i = int((e["at"] - window.start) // window.step)
            name = e["username"] if by == "user" else e["cluster"]
            found.setdefault((e["kind"], name), [0] * window.buckets)[i] += e["count"]
    return found


@pytest.mark.parametrize(
    "window",
    [
        sums.Window(D0, D0 + 3 * DAY, 3),  # whole days: usage_days
        sums.Window(D0 - DAY, D0 + 2 * DAY, 1),  # one 3-day bucket
        sums.Window(D0 + timedelta(hours=6), D0 + timedelta(hours=30), 4),  # 6-hour buckets: usage_hours
    ],
    ids=["days", "one-bucket", "hours"],
)
@pytest.mark.parametrize("by", ["user", "cluster"])
def test_dashboard_buckets_are_exact_at_their_edges_and_hold_only_readable_clusters(
    old_den: tuple[Database, list[dict]], window: sums.Window, by: str
) -> None:
    """An event at a bucket's first instant is in it, one a microsecond before is in the bucket
    before (or out of range); asked again, and for the window a bucket later, the kept sums give
    the same answers as the events."""
    db, events = old_den
    ann = _ann(db)
    closed = sums.ClosedBuckets()
    wanted = _bucketed(events, window, by, READABLE_BY_ANN)
    assert wanted, "the events reach into every window tested"
    for cache in (None, closed, closed):
        with db.read() as session:
            found = sums.usage(session, ann, window, by, None, cache)
        assert found.series == wanted
        totals = {(name, kind): sum(counts) for (kind, name), counts in wanted.items()}
        assert {(name, kind): count for name, kind, count, _, _ in found.table} == totals
    slid = sums.Window(window.start + window.step, window.end + window.step, window.buckets)
    with db.read() as session:
        assert sums.usage(session, ann, slid, by, None, closed).series == _bucketed(
            events, slid, by, READABLE_BY_ANN
        )
    with db.read() as session:
        one = sums.usage(session, ann, window, by, "/ben/shared", closed)
        hidden = sums.usage(session, ann, window, by, "/ben/private", closed)
    assert one.series == _bucketed(events, window, by, ["/ben/shared"]) and hidden.series == {}


def _insert_settled_usage(den: DenServer, cluster: str, user: str, at: datetime, count: int) -> None:
    """One event ``at`` a time that has settled, with the rollup rows usage.record would have
    written then (reports are always stamped now, so a test cannot send one from the past)."""
    engine = create_engine(den.db_url)
    owner, name = cluster.split("/")[1:]
    try:
        with engine.begin() as conn:
            conn.execute(insert(UsageEvent.__table__), [{"username": user, "cluster": cluster, "kind": "call",
                                                         "resource": None, "count": count, "at": at}])  # fmt: skip
            common = {
                "cluster": cluster,
                "username": user,
                "kind": "call",
                "count": count,
                "first_at": at,
                "last_at": at,
            }
            conn.execute(insert(UsageHour.__table__), [{"hour": usage.hour_of(at), **common}])
            conn.execute(insert(UsageDay.__table__), [{"day": usage.day_of(at), "resource": "", **common}])
            conn.execute(insert(UsageCluster.__table__), [{"cluster": cluster, "owner": owner, "name": name}])
    finally:
        engine.dispose()


def test_a_revoked_share_hides_the_clusters_usage_the_dashboard_had_summed(
    den: DenServer, people: Callable[[str], Person]
) -> None:
    alice, bob = people("alice"), people("bob")
    name = unique_name("lab")
    cluster = f"/{alice.name}/{name}"
    alice.http.put(f"/v1/resources{cluster}", json={"config": {"resource_type": "cluster"}})
    _insert_settled_usage(den, cluster, alice.name, utc_now() - timedelta(days=2, hours=3), 4321)
    own = f"/{bob.name}/{unique_name('mine')}"  # so bob always sees some usage, summed and kept
    _insert_settled_usage(den, own, bob.name, utc_now() - timedelta(days=2), 5)
    share = f"/v1/resources{cluster}/access/{bob.name}"
    assert alice.http.put(share, json={"access_level": "read"}).status_code == 200
    as_bob = Browser(den)
    assert as_bob.sign_in(bob.token).status_code == 200
    pages = ["/dashboard/usage?range=7d&by=cluster", "/dashboard/usage?range=30d&by=cluster"]

    def shown() -> list[bool]:
        seen = [
            re.search(
                rf"<td>{re.escape(cluster)}</td><td>call</td><td class=\"num\">4321</td>", as_bob.get(p).text
            )
            is not None
            for p in pages
        ]
        api = {r["cluster"]: r["count"] for r in bob.http.get("/v1/usage").json()}
        return [*seen, api.get(cluster) == 4321]

    assert shown() == [True, True, True]
    assert shown() == [True, True, True]  # now from the sums the dashboard kept
    assert alice.http.delete(share).status_code == 200
    assert shown() == [False, False, False]
    assert alice.http.put(share, json={"access_level": "denied"}).status_code == 200
    assert shown() == [False, False, False]
    assert alice.http.put(share, json={"access_level": "write"}).status_code == 200
    assert shown() == [True, True, True]
    alice.http.delete(f"/v1/resources{cluster}")
    assert shown() == [False, False, False], "a deleted cluster outside your namespace is no longer readable"
    as_bob.http.close()
