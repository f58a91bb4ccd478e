"""Fuzzing the daemon's HTTP API with malformed requests (hypothesis, a few hundred cases).

Every route gets bodies whose fields hold the wrong types, huge integers, deep nesting, bad base64,
broken frames and broken archives. The daemon must answer each with a status below 500 and a JSON
error that says what to fix, and the objects stored before must still be there and work after each.

The objects the fuzzer calls accept any JSON input without raising (``trust_targets``), so a 5xx
can only come from the daemon. Field values that would reach a shell or a package index (commands,
requirements, setup commands) are drawn from shapes that are refused, or from harmless values.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trust_targets as tt
from conftest import ASSETS, start_cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runhouse as rh
from runhouse.compute import local
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, GETATTR, SETATTR, frame_bytes

PROTECTED = ("data", "echo", "box", "Box")
FOUND: dict[str, int] = {"cases": 0, "5xx": 0}

# -- values -----------------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40), st.just("")
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
names = st.one_of(
    st.text(max_size=30).filter(lambda s: s not in PROTECTED),
    st.sampled_from(["fz-a", "fz/b", ".hidden", "a" * 300, "x\x00y", "default_env"]),
)
fields_values = st.one_of(json_values, names, st.lists(names, max_size=3))


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- bodies ------------------------------------------------------------------------------------------
ROUTE_FIELDS = {
    ("POST", "/object"): ["key", "data", "serialization", "env", "serialized_data", "env_name"],
    ("POST", "/rename"): ["key", "new_key"],
    ("POST", "/delete_object"): ["keys"],
    ("POST", "/resource"): [
        "key",
        "spec",
        "env",
        "env_config",
        "config",
        "kind",
        "serialization",
        "serialized_data",
        "env_name",
    ],
    ("POST", "/settings"): ["den_auth", "flush_auth_cache", "cluster_name", "autostop_mins"],
    ("POST", "/folder/method/ls"): ["path", "full_paths", "sort"],
    ("POST", "/folder/method/mkdir"): ["path"],
    ("POST", "/folder/method/get"): ["path", "encoding", "mode"],
    ("POST", "/folder/method/put"): ["path", "contents", "overwrite", "serialization"],
    ("POST", "/folder/method/rm"): ["path", "contents", "recursive"],
    ("POST", "/folder/method/mv"): ["path", "dest_path", "overwrite"],
    ("POST", "/folder/method/exists"): ["path"],
    ("POST", "/create_env"): ["name", "env_vars", "venv", "conda", "working_dir", "reqs", "setup_cmds"],
    ("POST", "/kill_env"): ["name"],
    ("POST", "/logs"): ["run_name"],
    ("POST", "/run_bash"): ["commands", "cwd", "env_vars", "stop_on_error"],
    ("POST", "/folder/sync"): ["name", "manifest"],
    ("POST", "/echo/call"): ["data", "serialization", "run_name", "stream_logs", "remote", "timeout"],
    ("POST", f"/box/{GETATTR}"): ["data", "serialization", "stream_logs"],
    ("POST", "/box/get"): ["data", "serialization"],
    ("POST", "/nothing/call"): ["data", "serialization"],
}
# values that would run or install something real: only refused shapes, or harmless values
SAFE = {
    "commands": st.one_of(
        st.just(["true"]), st.just("true"), st.integers(), st.lists(st.integers(), max_size=2), st.none()
    ),
    "setup_cmds": st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2), st.just("true")),
    "reqs": st.one_of(
        st.integers(),
        st.lists(
            st.one_of(
                st.integers(),
                st.text(max_size=5),
                st.fixed_dictionaries(
                    {
                        "kind": st.text(max_size=5).filter(lambda k: k not in ("pip", "local", "conda")),
                        "spec": st.text(max_size=5),
                    }
                ),
            ),
            min_size=1,
            max_size=2,
        ),
    ),
    "name": st.one_of(names, st.sampled_from(["fz1", "fz2"])),
    "spec": st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "module": st.sampled_from(["no_such_mod_xyz", "trust_targets", ""]),
                "qualname": st.one_of(st.text(max_size=10), st.integers()),
                "root": st.one_of(st.just(str(ASSETS)), st.integers(), st.none()),
            }
        ),
    ),
    "data": st.one_of(
        json_values,
        st.text(max_size=30),
        st.just("not base64 !!"),
        st.just(deep(5000)),
        st.just({"args": [1], "kwargs": {}}),
    ),
    "manifest": st.one_of(
        json_values,
        st.dictionaries(
            st.text(max_size=10), st.one_of(st.lists(st.integers(), max_size=3), scalars), max_size=3
        ),
    ),
    "keys": st.one_of(json_values, st.lists(names, max_size=3)),
    # file routes: only paths that are refused (outside the roots, a root itself, the daemons' folder)
    # or that do not exist, so the fuzzer never writes into the user's home
    "path": st.one_of(
        st.integers(),
        st.none(),
        st.sampled_from(
            ["", "/etc", "/", "~root", "x\x00y", "../../etc", "~", "/tmp/rh-fuzz", "~/.rh/daemons"]
        ),
    ),
    "dest_path": st.one_of(st.integers(), st.sampled_from(["", "/etc/x", "~", "/tmp/rh-fuzz2"])),
    "serialized_data": st.one_of(
        json_values, st.just("not base64 !!"), st.just('[{"name": 5}]'), st.just(deep(5000))
    ),
    "key": names,
    "new_key": names,
    "run_name": st.one_of(names, json_values),
}


@st.composite
def json_requests(draw: Any) -> tuple[str, str, bytes, str]:
    method, path = draw(st.sampled_from(sorted(ROUTE_FIELDS)))
    body: dict[str, Any] = {}
    for field in ROUTE_FIELDS[(method, path)]:
        if draw(st.booleans()):
            body[field] = draw(SAFE.get(field, fields_values))
    if path == "/create_env" and body.get("name") == "default_env":
        del body["name"]  # changing the default env restarts its worker, on purpose: not what this fuzzes
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=8))] = draw(json_values)  # an unknown field
    try:
        raw = json.dumps(body).encode()
    except ValueError:  # a huge int beyond what json may write: send it as text
        raw = json.dumps({k: str(v) for k, v in body.items()}).encode()
    return method, path, raw, "application/json"


@st.composite
def raw_requests(draw: Any) -> tuple[str, str, bytes, str]:
    method, path = draw(st.sampled_from(sorted(ROUTE_FIELDS)))
    raw = draw(
        st.sampled_from(
            [
                b"",
                b"{",
                b"[]",
                b"null",
                b"\xff\xfe",
                deep(100_000).encode(),
                b'{"data": ' + deep(3000).encode() + b', "serialization": "json"}',
                b'{"key": 1' + b"0" * 5000 + b"}",
                b'{"data": {"args": [1' + b"0" * 5000 + b']}, "serialization": "json"}',
            ]
        )
        | st.binary(max_size=64)
    )
    return method, path, raw, "application/json"


@st.composite
def frame_requests(draw: Any) -> tuple[str, str, bytes, str]:
    path = draw(st.sampled_from(["/echo/call", "/object", "/resource", "/folder/upload", "/box/get"]))
    header = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "serialization",
                    "size",
                    "run_name",
                    "stream_logs",
                    "remote",
                    "shm",
                    "timeout",
                    "key",
                    "name",
                    "manifest",
                    "spec",
                ]
            ),
            fields_values,
            max_size=4,
        )
    )
    payload = draw(st.binary(max_size=64))
    raw = json.dumps(header).encode()
    shape = draw(st.integers(0, 3))
    if shape == 0:
        body = len(raw).to_bytes(4, "big") + raw + payload  # the size field, if any, is whatever was drawn
    elif shape == 1:
        body = frame_bytes({k: v for k, v in header.items() if k != "size"}, payload)
    elif shape == 2:
        body = (2**31).to_bytes(4, "big") + raw  # a header length far past the body
    else:
        body = payload
    return "POST", path, body, FRAMES_CONTENT_TYPE


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@st.composite
def upload_requests(draw: Any) -> tuple[str, str, bytes, str]:
    name = draw(st.sampled_from(["up", "up2", "../up", "a/b"]))
    members = draw(
        st.sampled_from(
            [
                [("a", b"1"), ("a/b", b"2")],  # a file, then a folder of the same name
                [("x/y", b"1"), ("x", b"2")],
                [("ok.txt", b"1"), ("../escape", b"2")],
                [("d", None)],
                [("ok.txt", b"1")],
                [("/abs", b"1")],
            ]
        )
    )
    manifest = draw(st.one_of(st.just({m: [1, 1] for m, _ in members}), SAFE["manifest"]))
    archive = draw(
        st.sampled_from([_tar(members), gzip.compress(_tar(members)), b"not a tar", _tar(members)[:700], b""])
    )
    return (
        "POST",
        "/folder/upload",
        frame_bytes({"name": name, "manifest": manifest}, archive),
        FRAMES_CONTENT_TYPE,
    )


# -- the daemon --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def daemon() -> Iterator[dict[str, Any]]:
    cluster = start_cluster("fuzz")
    try:
        rh.function(tt.echo).to(cluster, name="echo")
        rh.module(tt.Box).to(cluster)(name="box")
        cluster.put("data", {"precious": [1, 2, 3]})
        token = local.read_token(cluster.settings, cluster.server_port)  # type: ignore[attr-defined]
        base = f"http://127.0.0.1:{cluster.server_port}"  # type: ignore[attr-defined]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as owner:
            yield {"cluster": cluster, "owner": owner, "base": base}
    finally:
        print(f"\nfuzz: {FOUND['cases']} malformed requests, {FOUND['5xx']} answered with a 5xx")
        cluster.teardown()  # type: ignore[attr-defined]


def _intact(owner: httpx.Client) -> None:
    keys = owner.get("/keys").json()["keys"]
    assert {"data", "echo", "box"} <= set(keys), keys
    assert owner.get("/object", params={"key": "data", "serialization": "json"}).json()["data"] == json.dumps(
        {"precious": [1, 2, 3]}
    )
    echoed = owner.post("/echo/call", json={"data": {"args": [1], "kwargs": {}}, "serialization": "none"})
    assert echoed.json() == {"args": [1], "kwargs": {}}
    value = owner.post(f"/box/{GETATTR}", json={"data": {"args": ["value"]}, "serialization": "none"})
    assert value.json() == 1


def _send(client: httpx.Client, request: tuple[str, str, bytes, str]) -> None:
    method, path, body, content_type = request
    reply = client.request(method, path, content=body, headers={"content-type": content_type})
    FOUND["cases"] += 1
    if reply.status_code >= 500:
        FOUND["5xx"] += 1
    assert reply.status_code < 500, (
        f"{method} {path} {body[:300]!r} -> {reply.status_code} {reply.text[:500]}"
    )
    if reply.status_code >= 400:
        error = reply.json()
        assert error["status"] == reply.status_code and error["detail"], error


FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@FUZZ
@given(request=st.one_of(json_requests(), raw_requests()))
def test_malformed_json_requests_get_4xx(
    daemon: dict[str, Any], request: tuple[str, str, bytes, str]
) -> None:
    _send(daemon["owner"], request)
    _intact(daemon["owner"])


@FUZZ
@given(request=st.one_of(frame_requests(), upload_requests()))
def test_malformed_frames_and_archives_get_4xx(
    daemon: dict[str, Any], request: tuple[str, str, bytes, str]
) -> None:
    _send(daemon["owner"], request)
    _intact(daemon["owner"])


@settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(request=st.one_of(json_requests(), raw_requests(), frame_requests()))
def test_without_a_token_nothing_gets_past_the_guard(
    daemon: dict[str, Any], request: tuple[str, str, bytes, str]
) -> None:
    method, path, body, content_type = request
    with httpx.Client(base_url=daemon["base"], timeout=30) as anonymous:
        reply = anonymous.request(method, path, content=body, headers={"content-type": content_type})
    FOUND["cases"] += 1
    assert reply.status_code == 401, reply.text
    _intact(daemon["owner"])


def test_setattr_with_bad_names_and_getattr_of_missing_attributes(daemon: dict[str, Any]) -> None:
    owner = daemon["owner"]
    for data in ({"args": [1, 2]}, {"args": []}, {"args": ["no_such_attribute"]}):
        reply = owner.post(f"/box/{GETATTR}", json={"data": data, "serialization": "json"})
        assert 400 <= reply.status_code < 500, reply.text
    reply = owner.post(f"/box/{SETATTR}", json={"data": {"args": [1, 2]}, "serialization": "json"})
    assert 400 <= reply.status_code < 500, reply.text
    _intact(owner)


def test_an_unpicklable_base64_body_is_a_400(daemon: dict[str, Any]) -> None:
    payload = base64.b64encode(b"\x80\x05not a pickle").decode()
    reply = daemon["owner"].post("/echo/call", json={"data": payload, "serialization": "pickle"})
    assert reply.status_code == 400 and "pickle" in reply.json()["detail"]
