"""Usage events, their aggregation (HTTP and `runhouse den usage`), heartbeats and cluster status."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from denserver import DenServer


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
