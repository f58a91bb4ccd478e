"""Resources through the real service: save, versions, read, history, list, delete, limits, names,
and bad input that must leave stored records as they were."""

from __future__ import annotations

import json

import pytest


def _put(person, name: str, config: dict, **extra):
    return person.http.put(f"/v1/resources/{person.name}/{name}", json={"config": config, **extra})


def test_put_get_versions_and_history(people) -> None:
    alice = people("alice")
    first = _put(alice, "fn", {"resource_type": "function", "code": "v1"})
    assert first.status_code == 200
    assert first.json() == {
        "owner": alice.name, "name": "fn", "version": 1, "resource_type": "function", "visibility": "private",
    }  # fmt: skip
    assert _put(alice, "fn", {"resource_type": "function", "code": "v2"}).json()["version"] == 2
    got = alice.http.get(f"/v1/resources/{alice.name}/fn").json()
    assert got["config"] == {"resource_type": "function", "code": "v2"}
    assert (got["version"], got["access_level"], got["updated_by"], got["visibility"]) == (
        2, "write", alice.name, "private",
    )  # fmt: skip
    assert got["updated_at"].endswith("Z") or got["updated_at"].endswith("+00:00")
    history = alice.http.get(f"/v1/resources/{alice.name}/fn/history").json()
    assert [(h["version"], h["config"]["code"], h["created_by"]) for h in history] == [
        (2, "v2", alice.name), (1, "v1", alice.name),
    ]  # fmt: skip
    assert len(alice.http.get(f"/v1/resources/{alice.name}/fn/history", params={"limit": 1}).json()) == 1


def test_list_filters_by_owner_and_type(people) -> None:
    alice, bob = people("alice"), people("bob")
    _put(alice, "c1", {"resource_type": "cluster"})
    _put(alice, "f1", {"resource_type": "function"})
    _put(bob, "pub", {"resource_type": "function"}, visibility="public")
    _put(bob, "hidden", {"resource_type": "function"})
    mine = alice.http.get("/v1/resources", params={"owner": alice.name}).json()
    assert [(r["name"], r["access_level"], r["version"]) for r in mine] == [
        ("c1", "write", 1),
        ("f1", "write", 1),
    ]
    functions = alice.http.get("/v1/resources", params={"resource_type": "function"}).json()
    names = {(r["owner"], r["name"]) for r in functions}
    assert (alice.name, "f1") in names and (bob.name, "pub") in names
    assert (bob.name, "hidden") not in names and (alice.name, "c1") not in names
    assert {r["access_level"] for r in functions if r["owner"] == bob.name} == {"read"}


def test_delete_removes_history_and_the_name_starts_over(people) -> None:
    alice = people("alice")
    _put(alice, "tmp", {"resource_type": "function", "n": 1})
    _put(alice, "tmp", {"resource_type": "function", "n": 2})
    assert alice.http.delete(f"/v1/resources/{alice.name}/tmp").json() == {"deleted": True}
    gone = alice.http.get(f"/v1/resources/{alice.name}/tmp")
    assert gone.status_code == 404 and f"/{alice.name}/tmp" in gone.json()["detail"]
    assert alice.http.get(f"/v1/resources/{alice.name}/tmp/history").status_code == 404
    assert _put(alice, "tmp", {"resource_type": "function", "n": 3}).json()["version"] == 1
    assert len(alice.http.get(f"/v1/resources/{alice.name}/tmp/history").json()) == 1
    assert alice.http.delete(f"/v1/resources/{alice.name}/never").status_code == 404


def test_unknown_resources_and_users_are_404(people) -> None:
    alice = people("alice")
    for path in (f"/v1/resources/{alice.name}/nothing", "/v1/resources/no-such-user-xyz/x"):
        reply = alice.http.get(path)
        assert reply.status_code == 404 and "no resource" in reply.json()["detail"]


@pytest.mark.parametrize(
    "owner_name, fragment",
    [("{me}/bad name", "invalid resource name"), ("{me}/-dash", "invalid resource name"),
     ("{me}/" + "x" * 129, "invalid resource name"), ("bad owner/x", "invalid username")],
)  # fmt: skip
def test_invalid_names_are_400_with_the_rule(people, owner_name: str, fragment: str) -> None:
    alice = people("alice")
    path = "/v1/resources/" + owner_name.format(me=alice.name)
    reply = alice.http.put(path, json={"config": {"resource_type": "function"}})
    assert reply.status_code == 400
    assert fragment in reply.json()["detail"] and "letters, digits" in reply.json()["detail"]
    assert alice.http.get(path).status_code == 400


def test_names_allow_dots_dashes_and_at_in_usernames(people) -> None:
    alice = people("alice@example.com+")
    assert _put(alice, "a.b_c-d", {"resource_type": "function"}).status_code == 200
    assert alice.http.get(f"/v1/resources/{alice.name}/a.b_c-d").status_code == 200


def test_config_over_one_mib_is_413(people) -> None:
    alice = people("alice")
    assert _put(alice, "big", {"resource_type": "blob", "data": "x" * (1024 * 1024 - 100)}).status_code == 200
    too_big = _put(alice, "big", {"resource_type": "blob", "data": "x" * (1024 * 1024)})
    assert too_big.status_code == 413 and "1 MiB" in too_big.json()["detail"]
    huge = alice.http.put(
        f"/v1/resources/{alice.name}/big",
        content=json.dumps({"config": {"resource_type": "blob", "data": "x" * (5 * 1024 * 1024)}}),
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert alice.http.get(f"/v1/resources/{alice.name}/big").json()["version"] == 1


def test_only_the_owner_creates_in_a_namespace(people) -> None:
    alice, bob = people("alice"), people("bob")
    refused = bob.http.put(f"/v1/resources/{alice.name}/x", json={"config": {"resource_type": "function"}})
    assert refused.status_code == 403
    assert bob.name in refused.json()["detail"] and f"/{alice.name}/x" in refused.json()["detail"]
    assert alice.http.get(f"/v1/resources/{alice.name}/x").status_code == 404


def test_secret_configs_go_through_the_vault_route(people) -> None:
    alice = people("alice")
    reply = _put(alice, "s", {"resource_type": "secret", "values": {"k": "v"}})
    assert reply.status_code == 400 and "/v1/secrets/" in reply.json()["detail"]


BAD_BODIES = [
    {"config": "not an object"},
    {"config": ["a", "list"]},
    {"config": {"no_type": 1}},
    {"config": {"resource_type": 5}},
    {"config": {"resource_type": ""}},
    {"config": {"resource_type": "function"}, "visibility": "secret-ish"},
    {"configuration": {"resource_type": "function"}},
    {"config": {"resource_type": "function", "data": "x" * (1024 * 1024 + 1)}},
]


def test_bad_input_never_changes_stored_records(people) -> None:
    alice = people("alice")
    _put(alice, "keep", {"resource_type": "function", "code": "good"}, visibility="unlisted")
    before = alice.http.get(f"/v1/resources/{alice.name}/keep").json()
    history_before = alice.http.get(f"/v1/resources/{alice.name}/keep/history").json()
    for body in BAD_BODIES:
        reply = alice.http.put(f"/v1/resources/{alice.name}/keep", json=body)
        assert reply.status_code in (400, 413, 422), (body, reply.text)
    for raw in (b"{not json", b"", b"\xff\xfe", b'{"config": {"resource_type": "f", "x": NaN}}'):
        reply = alice.http.put(
            f"/v1/resources/{alice.name}/keep", content=raw, headers={"content-type": "application/json"}
        )
        assert reply.status_code in (400, 422), (raw, reply.text)
    assert (
        alice.http.put(f"/v1/resources/{alice.name}/keep/visibility", json={"visibility": "x"}).status_code
        == 422
    )
    assert alice.http.get(f"/v1/resources/{alice.name}/keep").json() == before
    assert alice.http.get(f"/v1/resources/{alice.name}/keep/history").json() == history_before
    assert _put(alice, "keep", {"resource_type": "function", "code": "next"}).json()["version"] == 2
