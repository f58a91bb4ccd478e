"""Sharing and visibility through the real service: read, write, denied, revoke, private/unlisted/public."""

from __future__ import annotations


def _save(person, name: str, visibility: str | None = None) -> str:
    body = {"config": {"resource_type": "function"}, "visibility": visibility}
    assert person.http.put(f"/v1/resources/{person.name}/{name}", json=body).status_code == 200
    return f"/v1/resources/{person.name}/{name}"


def _share(owner, path: str, user, level: str):
    return owner.http.put(f"{path}/access/{user.name}", json={"access_level": level})


def test_private_is_403_naming_user_resource_and_access(people) -> None:
    alice, bob = people("alice"), people("bob")
    path = _save(alice, "p")
    refused = bob.http.get(path)
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert bob.name in detail and f"/{alice.name}/p" in detail and "needs read" in detail
    assert bob.http.get(f"{path}/history").status_code == 403
    assert bob.http.get(f"{path}/access").status_code == 403
    listed = bob.http.get("/v1/resources", params={"owner": alice.name}).json()
    assert listed == []


def test_read_share_reads_but_does_not_write(people) -> None:
    alice, bob = people("alice"), people("bob")
    path = _save(alice, "r")
    assert _share(alice, path, bob, "read").json() == {"username": bob.name, "access_level": "read"}
    got = bob.http.get(path).json()
    assert got["access_level"] == "read" and got["owner"] == alice.name
    write = bob.http.put(path, json={"config": {"resource_type": "function", "by": "bob"}})
    assert write.status_code == 403 and "needs write" in write.json()["detail"]
    assert bob.http.delete(path).status_code == 403
    assert _share(bob, path, bob, "write").status_code == 403
    assert [
        (r["name"], r["access_level"])
        for r in bob.http.get("/v1/resources", params={"owner": alice.name}).json()
    ] == [("r", "read")]
    assert alice.http.get(path).json()["version"] == 1


def test_write_share_saves_versions_and_shares_on(people) -> None:
    alice, bob, carol = people("alice"), people("bob"), people("carol")
    path = _save(alice, "w")
    _share(alice, path, bob, "write")
    saved = bob.http.put(path, json={"config": {"resource_type": "function", "by": "bob"}})
    assert saved.status_code == 200 and saved.json()["version"] == 2
    got = alice.http.get(path).json()
    assert got["updated_by"] == bob.name and got["config"]["by"] == "bob"
    assert alice.http.get(f"{path}/history").json()[0]["created_by"] == bob.name
    assert _share(bob, path, carol, "read").status_code == 200
    assert carol.http.get(path).status_code == 200
    assert sorted(
        (a["username"], a["access_level"]) for a in carol.http.get(f"{path}/access").json()
    ) == sorted([(bob.name, "write"), (carol.name, "read")])


def test_revoke_removes_access(people) -> None:
    alice, bob = people("alice"), people("bob")
    path = _save(alice, "rv")
    _share(alice, path, bob, "read")
    assert bob.http.get(path).status_code == 200
    assert alice.http.delete(f"{path}/access/{bob.name}").json() == {"revoked": True}
    assert bob.http.get(path).status_code == 403
    assert alice.http.delete(f"{path}/access/{bob.name}").status_code == 404
    assert alice.http.get(f"{path}/access").json() == []


def test_share_with_unknown_user_is_404_and_owner_is_400(people) -> None:
    alice = people("alice")
    path = _save(alice, "u")
    unknown = alice.http.put(f"{path}/access/nobody-here-xyz", json={"access_level": "read"})
    assert unknown.status_code == 404 and "nobody-here-xyz" in unknown.json()["detail"]
    assert alice.http.put(f"{path}/access/{alice.name}", json={"access_level": "read"}).status_code == 400
    assert alice.http.put(f"{path}/access/x", json={"access_level": "admin"}).status_code == 422


def test_unlisted_is_readable_by_name_but_not_listed(people) -> None:
    alice, bob = people("alice"), people("bob")
    path = _save(alice, "ul", visibility="unlisted")
    got = bob.http.get(path).json()
    assert got["access_level"] == "read" and got["visibility"] == "unlisted"
    assert bob.http.get("/v1/resources", params={"owner": alice.name}).json() == []
    assert bob.http.put(path, json={"config": {"resource_type": "function"}}).status_code == 403


def test_public_is_listed_to_everyone(people) -> None:
    alice, bob = people("alice"), people("bob")
    path = _save(alice, "pub")
    assert bob.http.get(path).status_code == 403
    changed = alice.http.put(f"{path}/visibility", json={"visibility": "public"})
    assert changed.status_code == 200 and changed.json()["visibility"] == "public"
    assert bob.http.get(path).json()["access_level"] == "read"
    listed = bob.http.get("/v1/resources", params={"owner": alice.name}).json()
    assert [(r["name"], r["visibility"], r["access_level"]) for r in listed] == [("pub", "public", "read")]
    assert bob.http.put(f"{path}/visibility", json={"visibility": "private"}).status_code == 403
    assert alice.http.put(f"{path}/visibility", json={"visibility": "private"}).status_code == 200
    assert bob.http.get(path).status_code == 403


def test_denied_beats_visibility(people) -> None:
    alice, bob, carol = people("alice"), people("bob"), people("carol")
    path = _save(alice, "d", visibility="public")
    _share(alice, path, bob, "denied")
    refused = bob.http.get(path)
    assert refused.status_code == 403 and "has none" in refused.json()["detail"]
    assert bob.http.get("/v1/resources", params={"owner": alice.name}).json() == []
    assert carol.http.get(path).status_code == 200
    _share(alice, path, bob, "write")  # a later share replaces the denial
    assert bob.http.get(path).json()["access_level"] == "write"
