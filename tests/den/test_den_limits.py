"""What Den refuses, through the real service on both databases: bodies over the size limit (chunked
and lying ones too), token lifetimes out of range, usage events and heartbeats from callers without
write access, and malformed input of every kind, which must get a 4xx that says what to fix."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from denserver import DenServer, unique_name

from runhouse.den.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_TOKEN_LIFETIME_S

CHUNK = b"x" * 65536


def _cluster(person, name: str | None = None) -> str:
    name = name or unique_name("cl")
    saved = person.http.put(
        f"/v1/resources/{person.name}/{name}", json={"config": {"resource_type": "cluster"}}
    )
    assert saved.status_code == 200, saved.text
    return f"/{person.name}/{name}"


def _connect(den: DenServer) -> socket.socket:
    parts = urlsplit(den.url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)


def _head(person, path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: den\r\nAuthorization: Bearer {person.token}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def _reply(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one response read from ``sock`` (or 0 if the connection just closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    parsed = json.loads(body) if headers.get("content-type") == "application/json" else {"text": body}
    return int(lines[0].split()[1]), parsed


def test_chunked_body_over_the_limit_is_413_as_soon_as_it_passes(people, den: DenServer) -> None:
    alice = people("alice")
    chunks = MAX_BODY_BYTES // len(CHUNK) + 2
    with _connect(den) as sock:
        sock.sendall(_head(alice, "/v1/events", "Transfer-Encoding: chunked\r\n"))
        for _ in range(chunks):
            sock.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        # the body is not finished: Den must answer from the count alone, not wait for the end
        status, body = _reply(sock)
    assert status == 413
    assert str(MAX_BODY_BYTES) in body["detail"] and "limit" in body["detail"]
    assert alice.http.get("/v1/me").json() == {"username": alice.name}


def test_streamed_body_over_the_limit_is_413_and_den_still_serves(people, den: DenServer) -> None:
    alice = people("alice")
    cluster = _cluster(alice)

    def body() -> Iterator[bytes]:
        yield b'{"events": [{"kind": "call", "cluster": "' + cluster.encode() + b'", "resource": "'
        for _ in range(MAX_BODY_BYTES // len(CHUNK) + 1):
            yield CHUNK
        yield b'"}]}'

    refused = alice.http.post("/v1/events", content=body(), headers={"content-type": "application/json"})
    assert refused.status_code == 413 and str(MAX_BODY_BYTES) in refused.json()["detail"]
    small = iter([b'{"events": [{"kind": "call", ', b'"cluster": "' + cluster.encode() + b'"}]}'])
    accepted = alice.http.post("/v1/events", content=small, headers={"content-type": "application/json"})
    assert accepted.json() == {"recorded": 1}  # a chunked body under the limit is fine
    usage = alice.http.get("/v1/usage", params={"cluster": cluster}).json()
    assert [row["count"] for row in usage] == [1]


def test_bodies_that_lie_about_their_length_get_no_5xx(people, den: DenServer) -> None:
    alice = people("alice")
    with _connect(den) as sock:  # declared over the limit: refused before a byte of it is sent
        sock.sendall(_head(alice, "/v1/tokens", f"Content-Length: {MAX_BODY_BYTES + 1}\r\n"))
        status, body = _reply(sock)
    assert status == 413 and str(MAX_BODY_BYTES) in body["detail"]
    with _connect(den) as sock:  # longer than declared: the rest is not a request
        sock.sendall(_head(alice, "/v1/tokens", "Content-Length: 2\r\n") + b"{}" + b"x" * 100)
        statuses = list(iter(lambda: _reply(sock)[0], 0))
    assert statuses and all(200 <= s < 500 for s in statuses) and statuses[-1] >= 400, statuses
    with _connect(den) as sock:  # shorter than declared, then the client gives up
        sock.sendall(_head(alice, "/v1/tokens", "Content-Length: 100\r\n") + b"{}")
        sock.shutdown(socket.SHUT_WR)
        status, _ = _reply(sock)
    assert status == 0 or 400 <= status < 500
    assert alice.http.get("/v1/me").status_code == 200


@pytest.mark.parametrize("route", ["/v1/tokens", "/v1/tokens/cluster"])
def test_token_lifetimes_are_bounded(people, route: str) -> None:
    alice = people("alice")
    extra = {"cluster": _cluster(alice)} if route.endswith("cluster") else {}
    before = len(alice.http.get("/v1/tokens").json())
    for value in (10**30, 10**12, MAX_TOKEN_LIFETIME_S + 1, 0, -1, 1.5, "60", True, [60]):
        reply = alice.http.post(route, json={"expires_in_s": value, **extra})
        assert reply.status_code == 422, (value, reply.text)
        error = reply.json()["detail"][0]
        assert error["loc"][-1] == "expires_in_s"
        assert f"from 1 to {MAX_TOKEN_LIFETIME_S}" in error["msg"], error
    assert len(alice.http.get("/v1/tokens").json()) == before
    longest = alice.http.post(route, json={"expires_in_s": MAX_TOKEN_LIFETIME_S, **extra})
    assert longest.status_code == 200, longest.text
    expires = datetime.fromisoformat(longest.json()["expires_at"].replace("Z", "+00:00"))
    expected = datetime.now(timezone.utc) + timedelta(seconds=MAX_TOKEN_LIFETIME_S)
    assert abs((expires - expected).total_seconds()) < 60


def test_token_add_cli_names_the_option_and_its_range(people, den: DenServer) -> None:
    carol = people("carol")
    for value in ("99999999999", "0"):
        refused = den.cli("token", "add", carol.name, "--expires-in", value, "--db", den.db_url, check=False)
        said = " ".join(refused.stderr.replace("│", " ").split())
        assert refused.returncode != 0 and "--expires-in" in said, refused.stderr
        assert f"give 1 to {MAX_TOKEN_LIFETIME_S} seconds" in said, refused.stderr
    minted = den.cli(
        "token", "add", carol.name, "--expires-in", str(MAX_TOKEN_LIFETIME_S), "--db", den.db_url
    )
    with den.client(minted.stdout.strip().splitlines()[-1]) as http:
        assert http.get("/v1/me").json() == {"username": carol.name}


def _usage(person, cluster: str) -> dict[tuple[str, str, str | None], int]:
    reply = person.http.get("/v1/usage", params={"cluster": cluster})
    assert reply.status_code == 200, reply.text
    return {(r["username"], r["kind"], r["resource"]): r["count"] for r in reply.json()}


def test_only_writers_and_the_clusters_daemon_record_its_usage(people, den: DenServer) -> None:
    alice, bob, carol = people("alice"), people("bob"), people("carol")
    cluster = _cluster(alice)
    call = {"kind": "call", "cluster": cluster, "resource": "/x/fn", "count": 5}
    refused = bob.http.post("/v1/events", json={"events": [call]})
    assert refused.status_code == 403
    assert "write" in refused.json()["detail"] and cluster in refused.json()["detail"]
    alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "read"})
    assert bob.http.post("/v1/events", json={"events": [call]}).status_code == 403
    unsaved = {"kind": "call", "cluster": f"/{alice.name}/{unique_name('unsaved')}"}
    assert bob.http.post("/v1/events", json={"events": [unsaved]}).status_code == 403
    own = {"kind": "cluster_up", "cluster": f"/{bob.name}/{unique_name('mine')}"}  # bob's namespace
    mixed = bob.http.post("/v1/events", json={"events": [own, call]})
    assert mixed.status_code == 403
    assert _usage(bob, own["cluster"]) == {}  # a refused request records none of its events
    assert _usage(alice, cluster) == {}
    assert bob.http.post("/v1/events", json={"events": [own]}).json() == {"recorded": 1}

    alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "write"})
    named = {**call, "username": carol.name}  # a user token always records as its own user
    assert bob.http.post("/v1/events", json={"events": [named]}).json() == {"recorded": 1}
    daemon = alice.http.post(f"/v1/clusters{cluster}/daemon-token").json()["token"]
    with den.client(daemon) as d:
        assert d.post(
            "/v1/events", json={"events": [{**call, "count": 2, "username": carol.name}]}
        ).json() == {"recorded": 1}
    assert _usage(alice, cluster) == {(bob.name, "call", "/x/fn"): 5, (carol.name, "call", "/x/fn"): 2}

    bobs = _cluster(bob)  # bob's own daemon token records for bob's cluster only, never alice's
    bob_daemon = bob.http.post(f"/v1/clusters{bobs}/daemon-token").json()["token"]
    with den.client(bob_daemon) as d:
        assert d.post("/v1/events", json={"events": [{**call, "username": alice.name}]}).status_code == 200
    assert _usage(alice, cluster) == {(bob.name, "call", "/x/fn"): 5, (carol.name, "call", "/x/fn"): 2}
    assert _usage(bob, bobs) == {(alice.name, "call", "/x/fn"): 5}


def test_only_writers_and_the_clusters_daemon_send_its_heartbeat(people, den: DenServer) -> None:
    alice, bob = people("alice"), people("bob")
    cluster = _cluster(alice)
    daemon = alice.http.post(f"/v1/clusters{cluster}/daemon-token").json()["token"]
    with den.client(daemon) as d:
        assert (
            d.post(f"/v1/clusters{cluster}/heartbeat", json={"status": {"from": "daemon"}}).status_code == 200
        )
    for level in (None, "read"):
        if level:
            alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": level})
        refused = bob.http.post(f"/v1/clusters{cluster}/heartbeat", json={"status": {"from": "bob"}})
        assert refused.status_code == 403 and "write" in refused.json()["detail"], refused.text
    bobs = _cluster(bob)
    bob_daemon = bob.http.post(f"/v1/clusters{bobs}/daemon-token").json()["token"]
    with den.client(bob_daemon) as d:
        refused = d.post(f"/v1/clusters{cluster}/heartbeat", json={"status": {"from": "bob's daemon"}})
    assert refused.status_code == 403 and bobs in refused.json()["detail"]
    assert alice.http.get(f"/v1/clusters{cluster}/status").json()["status"] == {"from": "daemon"}


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"resource_type": "x", "a": value}


def test_configs_nest_up_to_the_limit_and_no_deeper(people) -> None:
    alice = people("alice")
    path = f"/v1/resources/{alice.name}/{unique_name('deep')}"
    assert alice.http.put(path, json={"config": _nested(MAX_JSON_DEPTH)}).status_code == 200
    assert alice.http.get(path).json()["config"] == _nested(MAX_JSON_DEPTH)
    assert alice.http.get(f"{path}/history").status_code == 200
    for depth in (MAX_JSON_DEPTH + 1, 900, 5000):
        text = '{"config": {"resource_type": "x", "a": ' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}}"
        reply = alice.http.put(path, content=text, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and str(MAX_JSON_DEPTH) in reply.json()["detail"], reply.text[:300]
    assert alice.http.get(path).json()["version"] == 1


NASTY: list[object] = [
    None, True, -1, 0, 10**30, 1.5, float("1e308"), "", "x" * 300, "a\u0000b", "\ud800", "\udfff\ud800",
    [], {}, [[[[]]]], {"a": {"b": {}}}, "/../../etc", "/a/b", ["\u0000"], {"\ud800": "\u0000"},
]  # fmt: skip


def _fuzz_bodies(rng: random.Random, fields: list[str]) -> Iterator[object]:
    yield from NASTY  # as the whole body
    for _ in range(25):
        yield {field: rng.choice(NASTY) for field in rng.sample(fields, rng.randint(1, len(fields)))}


def test_malformed_requests_get_4xx_that_say_what_to_fix(people, den: DenServer) -> None:
    alice, bob = people("alice"), people("bob")
    cluster = _cluster(alice)
    owner, name = cluster.strip("/").split("/")
    routes: list[tuple[str, str, list[str]]] = [
        ("POST", "/v1/tokens", ["name", "expires_in_s"]),
        ("POST", "/v1/tokens/cluster", ["cluster", "name", "expires_in_s"]),
        ("PUT", f"/v1/resources/{owner}/{unique_name('fz')}", ["config", "visibility"]),
        ("PUT", f"/v1/resources{cluster}/visibility", ["visibility"]),
        ("PUT", f"/v1/resources{cluster}/access/{bob.name}", ["access_level"]),
        ("PUT", f"/v1/secrets/{owner}/{unique_name('fzs')}", ["values", "provider", "visibility"]),
        ("POST", "/v1/events", ["events"]),
        ("POST", f"/v1/clusters/{owner}/{name}/heartbeat", ["status"]),
        ("POST", "/v1/auth/check", ["token", "resource"]),
    ]
    rng = random.Random(9)
    sent = 0
    for method, path, fields in routes:
        bodies = list(_fuzz_bodies(rng, fields))
        bodies += [
            {"events": [rng.choice(NASTY) for _ in range(3)]},
            {"config": {"resource_type": rng.choice(NASTY)}},
        ]
        bodies += [
            {"events": [{"kind": "call", "cluster": cluster, "resource": v, "count": v}]} for v in NASTY
        ]
        for body in bodies:
            content = json.dumps(body, allow_nan=True)
            reply = alice.http.request(
                method, path, content=content, headers={"content-type": "application/json"}
            )
            sent += 1
            assert reply.status_code < 500, (method, path, content[:200], reply.text[:300])
            if reply.status_code >= 400:
                assert reply.json()["detail"], (method, path, content[:200])
    raw = [
        ("POST", "/v1/tokens", b"{"),
        ("POST", "/v1/tokens", b'{"name": "\xff\xfe"}'),
        ("POST", "/v1/tokens", b'{"expires_in_s": ' + b"9" * 5000 + b"}"),
        ("POST", "/v1/tokens", b"[" * 100_000 + b"]" * 100_000),
        ("POST", "/v1/tokens", b'{"expires_in_s": ' + b"[" * 500 + b"]" * 500 + b"}"),
        ("POST", "/v1/tokens", b'{"expires_in_s": ' + b"[" * 950 + b"]" * 950 + b"}"),
        ("POST", "/v1/events", b'{"events": ' + b"[" * 950 + b"]" * 950 + b"}"),
        ("PUT", f"/v1/resources/{owner}/x", b'{"config": {"resource_type": "x", "a": NaN}}'),
        ("PUT", f"/v1/resources/{owner}/x", b'{"config": {"resource_type": "x", "a": ' + b"[" * 950 + b"]" * 950 + b"}}"),
    ]  # fmt: skip
    for method, path, content in raw:
        reply = alice.http.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )
        assert 400 <= reply.status_code < 500 and reply.json()["detail"], (
            path,
            content[:80],
            reply.text[:300],
        )
    queries = [
        ("GET", f"/v1/resources{cluster}/history", {"limit": str(10**30)}),
        ("GET", f"/v1/resources{cluster}/history", {"limit": "-5"}),
        ("GET", "/v1/resources", {"resource_type": "a\u0000"}),
        ("GET", "/v1/resources", {"resource_type": "t" * 60_000}),
        ("GET", "/v1/resources", {"owner": "o" * 60_000}),
        ("GET", "/v1/usage", {"since": "99999999999999d"}),
        ("GET", "/v1/usage", {"since": "9999-12-31T23:59:59-05:00"}),
        ("GET", "/v1/usage", {"cluster": "/" + "a" * 60_000 + "/b"}),
        ("DELETE", "/v1/tokens/%00", {}),
        ("GET", f"/v1/resources/{owner}/" + "n" * 5000, {}),
    ]
    for method, path, params in queries:
        reply = alice.http.request(method, path, params=params)
        assert 400 <= reply.status_code < 500 and reply.json()["detail"], (path, params, reply.text[:300])
    assert sent > 200
    assert alice.http.get("/v1/me").json() == {"username": alice.name}
