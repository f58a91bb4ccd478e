"""Usage events, their aggregation (HTTP and `runhouse den usage`), heartbeats and cluster status."""

from __future__ import annotations

import itertools
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from denserver import DenServer, postgres_url
from sqlalchemy import Engine, create_engine, insert, select

from runhouse.den import usage
from runhouse.den.db import MIGRATIONS_DIR
from runhouse.den.models import UsageEvent, UsageHour


def _cluster(person, name: str) -> str:
    person.http.put(f"/v1/resources/{person.name}/{name}", json={"config": {"resource_type": "cluster"}})
    return f"/{person.name}/{name}"


def _rows(person, **params) -> dict[tuple, dict]:
    reply = person.http.get("/v1/usage", params=params)
    assert reply.status_code == 200, reply.text
    return {(r["username"], r["cluster"], r["kind"], r["resource"]): r for r in reply.json()}


def test_events_aggregate_per_user_cluster_kind_and_resource(people) -> None:
    alice, bob = people("alice"), people("bob")
    cluster = _cluster(alice, "gpu")
    alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "write"})
    events = [
        {"kind": "cluster_up", "cluster": cluster},
        {"kind": "deploy", "cluster": cluster, "resource": "/x/fn"},
        {"kind": "call", "cluster": cluster, "resource": "/x/fn", "count": 5},
        {"kind": "call", "cluster": cluster, "resource": "/x/fn", "count": 2, "username": "someone-else"},
    ]
    assert alice.http.post("/v1/events", json={"events": events}).json() == {"recorded": 4}
    time.sleep(0.02)
    bob.http.post("/v1/events", json={"events": [{"kind": "call", "cluster": cluster, "resource": "/x/fn"}]})
    rows = _rows(alice, cluster=cluster)
    calls = rows[(alice.name, cluster, "call", "/x/fn")]
    assert calls["count"] == 7  # the username in an event sent with a user token is ignored
    assert rows[(alice.name, cluster, "cluster_up", None)]["count"] == 1
    assert rows[(bob.name, cluster, "call", "/x/fn")]["count"] == 1
    assert calls["first"] <= calls["last"]
    assert set(_rows(bob, cluster=cluster)) == set(rows)  # bob can read the cluster too


def test_usage_is_only_shown_for_readable_clusters(people) -> None:
    alice, eve = people("alice"), people("eve")
    cluster = _cluster(alice, "private")
    alice.http.post("/v1/events", json={"events": [{"kind": "cluster_up", "cluster": cluster}]})
    assert _rows(eve, cluster=cluster) == {}
    assert all(key[1] != cluster for key in _rows(eve))


def test_since_filters_by_time(people) -> None:
    alice = people("alice")
    cluster = _cluster(alice, "since")
    alice.http.post("/v1/events", json={"events": [{"kind": "call", "cluster": cluster}]})
    time.sleep(1.1)
    cut = time.time()
    alice.http.post("/v1/events", json={"events": [{"kind": "call", "cluster": cluster, "count": 4}]})
    assert _rows(alice, cluster=cluster)[(alice.name, cluster, "call", None)]["count"] == 5
    assert _rows(alice, cluster=cluster, since=str(cut))[(alice.name, cluster, "call", None)]["count"] == 4
    iso = datetime.fromtimestamp(cut, timezone.utc).isoformat()
    assert _rows(alice, cluster=cluster, since=iso)[(alice.name, cluster, "call", None)]["count"] == 4
    bad = alice.http.get("/v1/usage", params={"since": "last tuesday"})
    assert bad.status_code == 400 and "unix seconds" in bad.json()["detail"]


def test_event_validation(people) -> None:
    alice = people("alice")
    cluster = _cluster(alice, "v")
    for event in (
        {"kind": "explode", "cluster": cluster},
        {"kind": "call", "cluster": cluster, "count": 0},
        {"kind": "call"},
    ):
        assert alice.http.post("/v1/events", json={"events": [event]}).status_code == 422
    assert (
        alice.http.post("/v1/events", json={"events": [{"kind": "call", "cluster": "nope"}]}).status_code
        == 400
    )
    too_many = [{"kind": "call", "cluster": cluster}] * 1001
    reply = alice.http.post("/v1/events", json={"events": too_many})
    assert reply.status_code == 400 and "1000" in reply.json()["detail"]
    assert _rows(alice, cluster=cluster) == {}


def test_daemon_events_name_the_user_and_are_forced_to_its_cluster(people, den: DenServer) -> None:
    alice, bob = people("alice"), people("bob")
    cluster, other = _cluster(alice, "d1"), _cluster(alice, "d2")
    daemon = alice.http.post(f"/v1/clusters{cluster}/daemon-token").json()["token"]
    with den.client(daemon) as d:
        events = [
            {"kind": "call", "cluster": other, "resource": "/a/f", "count": 3, "username": bob.name},
            {"kind": "cluster_up", "cluster": other},
        ]
        assert d.post("/v1/events", json={"events": events}).json() == {"recorded": 2}
        assert d.get("/v1/usage").status_code == 403
    rows = _rows(alice)
    assert rows[(bob.name, cluster, "call", "/a/f")]["count"] == 3
    assert rows[(alice.name, cluster, "cluster_up", None)]["count"] == 1
    assert not any(key[1] == other for key in rows)


def test_usage_cli_prints_who_used_what_and_when(people, den: DenServer) -> None:
    alice, bob = people("alice"), people("bob")
    cluster = _cluster(alice, "cli")
    alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "write"})
    alice.http.post("/v1/events", json={"events": [{"kind": "cluster_up", "cluster": cluster}]})
    bob.http.post(
        "/v1/events", json={"events": [{"kind": "call", "cluster": cluster, "resource": "fn", "count": 9}]}
    )
    wide = {"COLUMNS": "250"}
    out = den.cli("usage", "--db", den.db_url, "--cluster", cluster, env=wide).stdout
    lines = [line for line in out.splitlines() if cluster in line]
    assert len(lines) == 2
    bob_line = next(line for line in lines if bob.name in line)
    assert "call" in bob_line and " 9 " in bob_line and "fn" in bob_line
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert bob_line.count(today) == 2  # first and last
    assert any(alice.name in line and "cluster_up" in line for line in lines)
    nothing = den.cli("usage", "--db", den.db_url, "--cluster", f"/{alice.name}/unused", env=wide).stdout
    assert "No usage recorded" in nothing
    bad = den.cli("usage", "--db", den.db_url, "--cluster", "bad", check=False)
    assert bad.returncode == 1 and "/owner/name" in bad.stderr


def test_heartbeat_and_status(people, den: DenServer) -> None:
    alice, bob = people("alice"), people("bob")
    cluster = _cluster(alice, "hb")
    assert alice.http.get(f"/v1/clusters{cluster}/status").json() == {
        "status": None, "last_heartbeat": None, "seconds_ago": None,
    }  # fmt: skip
    daemon = alice.http.post(f"/v1/clusters{cluster}/daemon-token").json()["token"]
    with den.client(daemon) as d:
        assert d.post(f"/v1/clusters{cluster}/heartbeat", json={"status": {"workers": 2}}).json() == {
            "ok": True
        }
        other = _cluster(alice, "hb2")
        refused = d.post(f"/v1/clusters{other}/heartbeat", json={"status": {}})
        assert refused.status_code == 403 and cluster in refused.json()["detail"]
        assert d.get(f"/v1/clusters{cluster}/status").status_code == 403
    status = alice.http.get(f"/v1/clusters{cluster}/status").json()
    assert status["status"] == {"workers": 2} and 0 <= status["seconds_ago"] < 30
    assert status["last_heartbeat"] is not None
    assert bob.http.get(f"/v1/clusters{cluster}/status").status_code == 403
    assert bob.http.post(f"/v1/clusters{cluster}/heartbeat", json={"status": {}}).status_code == 403
    alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "write"})
    assert (
        bob.http.post(f"/v1/clusters{cluster}/heartbeat", json={"status": {"workers": 3}}).status_code == 200
    )
    assert bob.http.get(f"/v1/clusters{cluster}/status").json()["status"] == {"workers": 3}
    assert (
        alice.http.post(f"/v1/clusters/{alice.name}/none/heartbeat", json={"status": {}}).status_code == 404
    )


def _sums(engine: Engine, clusters: list[str]) -> tuple[dict[tuple, int], dict[tuple, int]]:
    """Per (hour, cluster, user, kind): the events' counts summed, and the ``usage_hours`` rows."""
    with engine.connect() as conn:
        events = conn.execute(
            select(
                UsageEvent.at, UsageEvent.cluster, UsageEvent.username, UsageEvent.kind, UsageEvent.count
            ).where(UsageEvent.cluster.in_(clusters))
        )
        raw: dict[tuple, int] = {}
        for at, cluster, user, kind, count in events:
            key = (usage.hour_of(at), cluster, user, kind)
            raw[key] = raw.get(key, 0) + count
        keys = (UsageHour.hour, UsageHour.cluster, UsageHour.username, UsageHour.kind)
        rolled = conn.execute(select(*keys, UsageHour.count).where(UsageHour.cluster.in_(clusters)))
        return raw, {(h, c, u, k): n for h, c, u, k, n in rolled}


def test_hourly_sums_equal_the_events_after_many_concurrent_reports(den: DenServer, people) -> None:
    alice, bob = people("alice"), people("bob")
    clusters = [_cluster(alice, f"busy{i}") for i in range(3)]
    for cluster in clusters:
        alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "write"})
    rng = random.Random(3)
    batches = [
        [
            {
                "kind": rng.choice(["call", "deploy"]),
                "cluster": rng.choice(clusters),
                "count": rng.randint(1, 9),
            }
            for _ in range(rng.randint(1, 30))
        ]
        for _ in range(60)
    ]

    def send(i: int) -> int:
        person = alice if i % 2 else bob
        reply = person.http.post("/v1/events", json={"events": batches[i]})
        assert reply.status_code == 200, reply.text
        return int(reply.json()["recorded"])

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(send, range(len(batches)))) == sum(len(b) for b in batches)
    engine = create_engine(den.db_url)
    try:
        raw, rolled = _sums(engine, clusters)
    finally:
        engine.dispose()
    assert rolled == raw and sum(rolled.values()) == sum(e["count"] for b in batches for e in b)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_migration_0002_fills_usage_hours_from_the_events_before_it(database: str, tmp_path: Path) -> None:
    url = postgres_url() if database == "postgresql" else f"sqlite:///{tmp_path / 'old.sqlite'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
        hour = datetime(2026, 3, 1, 10)
        times = [
            hour,
            hour + timedelta(minutes=59, seconds=59.9),
            hour + timedelta(hours=1),
            hour - timedelta(days=40),
        ]
        rows = [
            {"username": u, "cluster": c, "kind": k, "resource": None, "count": n, "at": at}
            for n, (at, u, c, k) in enumerate(
                itertools.product(times, ["ann", "ben"], ["/ann/a", "/ben/b"], ["call", "cluster_up"]),
                start=1,
            )
        ]
        with engine.begin() as conn:
            conn.execute(insert(UsageEvent.__table__), rows)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        raw, rolled = _sums(engine, ["/ann/a", "/ben/b"])
        assert rolled == raw and len(rolled) == 3 * 2 * 2 * 2  # the first two times share an hour
        with engine.connect() as conn:
            first, last = conn.execute(
                select(UsageHour.first_at, UsageHour.last_at).where(
                    UsageHour.hour == usage.hour_of(hour),
                    UsageHour.cluster == "/ann/a",
                    UsageHour.username == "ann",
                    UsageHour.kind == "call",
                )
            ).one()
        assert (first, last) == (times[0], times[1])
    finally:
        engine.dispose()
