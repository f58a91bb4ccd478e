"""Users and tokens through the real service: auth, expiry, revocation, hashed storage, scopes."""

from __future__ import annotations

import hashlib
import time

from denserver import DenServer


def test_health_and_openapi_need_no_token(den: DenServer) -> None:
    with den.client() as http:
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["db"] in ("sqlite", "postgresql")
        assert health["db"] == ("sqlite" if den.db_url.startswith("sqlite") else "postgresql")
        paths = http.get("/openapi.json").json()["paths"]
        assert "/v1/resources/{owner}/{name}" in paths and "/v1/auth/check" in paths
        assert http.get("/docs").status_code == 200


def test_missing_and_unknown_tokens_are_401_with_a_hint(den: DenServer) -> None:
    with den.client() as http:
        missing = http.get("/v1/me")
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
    with den.client("rhd_not-a-real-token") as http:
        unknown = http.get("/v1/me")
        assert unknown.status_code == 401 and "does not know" in unknown.json()["detail"]


def test_user_token_identifies_its_user(people) -> None:
    alice = people("alice")
    assert alice.http.get("/v1/me").json() == {"username": alice.name}


def test_minted_token_works_lists_without_secret_and_revokes(people, den: DenServer) -> None:
    alice = people("alice")
    minted = alice.http.post("/v1/tokens", json={"name": "laptop"}).json()
    assert minted["token"].startswith("rhd_") and minted["expires_at"] is None
    with den.client(minted["token"]) as second:
        assert second.get("/v1/me").json() == {"username": alice.name}
        listed = alice.http.get("/v1/tokens").json()
        assert {t["id"] for t in listed} >= {minted["id"]}
        assert all("token" not in t for t in listed)
        assert alice.http.delete(f"/v1/tokens/{minted['id']}").json() == {"revoked": True}
        refused = second.get("/v1/me")
        assert refused.status_code == 401
        assert minted["id"] in refused.json()["detail"] and "revoked" in refused.json()["detail"]
    assert alice.http.get("/v1/me").status_code == 200  # the other token still works


def test_only_the_owner_revokes_a_token(people) -> None:
    alice, bob = people("alice"), people("bob")
    minted = alice.http.post("/v1/tokens", json={}).json()
    assert bob.http.delete(f"/v1/tokens/{minted['id']}").status_code == 404
    assert alice.http.get("/v1/tokens").json()[-1]["revoked"] is False


def test_expired_token_is_401_saying_so(people, den: DenServer) -> None:
    alice = people("alice")
    minted = alice.http.post("/v1/tokens", json={"expires_in_s": 1}).json()
    assert minted["expires_at"] is not None
    with den.client(minted["token"]) as short:
        assert short.get("/v1/me").status_code == 200
        time.sleep(1.3)
        expired = short.get("/v1/me")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_tokens_are_stored_only_as_sha256(people, den: DenServer) -> None:
    alice = people("alice")
    minted = alice.http.post("/v1/tokens", json={}).json()
    stored = den.stored_text()
    for secret in (alice.token, minted["token"]):
        assert secret not in stored
        assert secret.removeprefix("rhd_") not in stored
        assert hashlib.sha256(secret.encode()).hexdigest() in stored


def _cluster(owner) -> str:
    name = f"cl-{time.monotonic_ns()}"
    saved = owner.http.put(
        f"/v1/resources/{owner.name}/{name}", json={"config": {"resource_type": "cluster"}}
    )
    assert saved.status_code == 200, saved.text
    return f"/{owner.name}/{name}"


def test_cluster_token_is_refused_on_den_routes(people, den: DenServer) -> None:
    alice = people("alice")
    cluster = _cluster(alice)
    minted = alice.http.post("/v1/tokens/cluster", json={"cluster": cluster}).json()
    assert minted["scope"] == f"cluster:{cluster}"
    with den.client(minted["token"]) as scoped:
        for reply in (scoped.get("/v1/me"), scoped.get(f"/v1/resources{cluster}"), scoped.get("/v1/usage")):
            assert reply.status_code == 403
            assert reply.json()["detail"] == f"this token is scoped to cluster {cluster}; use your user token"


def test_any_user_gets_a_cluster_token_for_a_saved_cluster(people, den: DenServer) -> None:
    alice, bob = people("alice"), people("bob")
    cluster = _cluster(alice)
    missing = alice.http.post("/v1/tokens/cluster", json={"cluster": f"/{alice.name}/no-such"})
    assert missing.status_code == 404
    bad = alice.http.post("/v1/tokens/cluster", json={"cluster": "not-a-uri"})
    assert bad.status_code == 400 and "/owner/name" in bad.json()["detail"]
    # bob may not read the cluster, but gets a token naming him; its daemon learns he has no access
    minted = bob.http.post("/v1/tokens/cluster", json={"cluster": cluster})
    assert minted.status_code == 200
    daemon = alice.http.post(f"/v1/clusters{cluster}/daemon-token").json()["token"]
    with den.client(daemon) as d:
        checked = d.post("/v1/auth/check", json={"token": minted.json()["token"]}).json()
    assert checked == {"username": bob.name, "access_level": "none"}


def test_daemon_token_checks_callers_for_its_cluster(people, den: DenServer) -> None:
    alice, bob, carol = people("alice"), people("bob"), people("carol")
    cluster = _cluster(alice)
    other = _cluster(alice)
    owner, name = cluster.strip("/").split("/")
    assert (
        alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "read"}).status_code
        == 200
    )
    daemon = alice.http.post(f"/v1/clusters/{owner}/{name}/daemon-token").json()
    assert daemon["scope"] == f"daemon:{cluster}"
    bob_cluster = bob.http.post("/v1/tokens/cluster", json={"cluster": cluster}).json()
    bob_cluster_token = bob_cluster["token"]
    alice_other_token = alice.http.post("/v1/tokens/cluster", json={"cluster": other}).json()["token"]
    with den.client(daemon["token"]) as d:

        def check(token: str, resource: str | None = None):
            return d.post("/v1/auth/check", json={"token": token, "resource": resource})

        assert check(alice.token).json() == {"username": alice.name, "access_level": "write"}
        assert check(bob.token).json() == {"username": bob.name, "access_level": "read"}
        assert check(carol.token).json() == {"username": carol.name, "access_level": "none"}
        assert check(bob_cluster_token).json() == {"username": bob.name, "access_level": "read"}
        assert check(bob.token, other).json()["access_level"] == "none"
        assert check(alice.token, f"/{alice.name}/never-saved").json()["access_level"] == "none"
        wrong_cluster = check(alice_other_token)
        assert wrong_cluster.status_code == 403 and other in wrong_cluster.json()["detail"]
        assert check("rhd_unknown").status_code == 401
        # the daemon token itself may not use ordinary routes
        refused = d.get(f"/v1/resources{cluster}")
        assert refused.status_code == 403 and "daemon token" in refused.json()["detail"]
    assert alice.http.post("/v1/auth/check", json={"token": bob.token}).status_code == 403
    assert bob.http.delete(f"/v1/tokens/{bob_cluster['id']}").status_code == 200
    with den.client(daemon["token"]) as d:
        assert d.post("/v1/auth/check", json={"token": bob_cluster_token}).status_code == 401


def test_daemon_token_needs_write_on_the_cluster(people) -> None:
    alice, bob = people("alice"), people("bob")
    cluster = _cluster(alice)
    alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "read"})
    refused = bob.http.post(f"/v1/clusters{cluster}/daemon-token")
    assert refused.status_code == 403 and "write" in refused.json()["detail"]
    alice.http.put(f"/v1/resources{cluster}/access/{bob.name}", json={"access_level": "write"})
    assert bob.http.post(f"/v1/clusters{cluster}/daemon-token").status_code == 200


def test_deleting_a_cluster_revokes_its_tokens(people, den: DenServer) -> None:
    alice = people("alice")
    cluster = _cluster(alice)
    daemon = alice.http.post(f"/v1/clusters{cluster}/daemon-token").json()["token"]
    alice.http.delete(f"/v1/resources{cluster}")
    with den.client(daemon) as d:
        assert d.post("/v1/auth/check", json={"token": alice.token}).status_code == 401
