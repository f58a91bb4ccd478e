"""The original system's HTTP API, as a curl user or one of its clients speaks it (issue 11,
points 10 and 13): raw HTTP with httpx, no runhouse client on the calling side."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import httpx
import pytest
import user_funcs as uf
from conftest import ASSETS

import runhouse as rh
from runhouse.compute import local


@pytest.fixture(scope="module")
def http(cluster):
    token = local.read_token(cluster.settings, cluster.server_port)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{cluster.server_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        rh.function(uf.add).to(cluster, name="oadd")
        rh.function(uf.print_and_return).to(cluster, name="oprint")
        rh.module(uf.Counter).to(cluster)(start=1, name="ocounter")
        yield client


def test_each_service_describes_itself_in_openapi(http):
    spec = http.get("/ocounter/openapi.json")
    assert spec.status_code == 200
    doc = spec.json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "ocounter"
    incr = doc["paths"]["/ocounter/incr"]["post"]
    body = incr["requestBody"]["content"]["application/json"]["schema"]
    assert "by" in body["properties"]["data"]["properties"]["kwargs"]["properties"]
    fn = http.get("/oadd/openapi.json").json()
    assert set(
        fn["paths"]["/oadd/call"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "properties"
        ]["data"]["properties"]["kwargs"]["properties"]
    ) == {"a", "b"}
    # what the document says is how the call is made
    reply = http.post(
        "/oadd/call", json={"data": {"args": [], "kwargs": {"a": 2, "b": 3}}, "serialization": "json"}
    )
    assert json.loads(reply.json()["data"]) == 5
    page = http.get("/ocounter/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/ocounter/incr" in page.text and "<script" not in page.text
    assert http.get("/no_such_key/openapi.json").status_code == 404
    # a POST to the same path is a call to a method of that name, which does not exist
    assert http.post("/oadd/openapi.json", json={"data": {}}).status_code == 404


def test_mime_base64_pickles_are_accepted_and_junk_is_not(http):
    mime = base64.encodebytes(pickle.dumps({"args": ["x" * 200, "y"], "kwargs": {}})).decode()
    assert "\n" in mime[:-1]  # lines of 76 characters, as the original client sent them
    reply = http.post("/oadd/call", json={"data": mime, "serialization": "pickle"})
    assert reply.status_code == 200
    assert pickle.loads(base64.b64decode(reply.json()["data"])) == "x" * 200 + "y"
    put = http.post("/object", json={"key": "omime", "serialized_data": mime, "serialization": "pickle"})
    assert put.status_code == 200
    bad = http.post("/oadd/call", json={"data": mime.replace("\n", "!\n", 1), "serialization": "pickle"})
    assert bad.status_code == 400 and "base64" in bad.json()["detail"]


def test_null_serialization_means_none(http):
    reply = http.post("/oadd/call", json={"data": {"args": [1, 2], "kwargs": {}}, "serialization": None})
    assert reply.status_code == 200 and reply.json() == 3


def test_get_call_returns_the_envelope_and_keeps_serialization_out_of_kwargs(http):
    reply = http.get("/oadd/call", params={"a": "x", "b": "y"})
    assert reply.status_code == 200
    envelope = reply.json()
    assert envelope["output_type"] == "result_serialized" and envelope["serialization"] == "json"
    assert json.loads(envelope["data"]) == "xy"
    # serialization is an option, not a keyword argument (add() would refuse a third one)
    bare = http.get("/oadd/call", params={"a": "x", "b": "y", "serialization": "none"})
    assert bare.status_code == 200 and bare.json() == "xy"
    assert http.get("/oadd/call", params={"a": "1", "b": "2", "serialization": "pickle"}).status_code == 400


def test_streamed_stdout_carries_a_list_of_lines(http):
    body = {"data": {"args": ["two\nlines"], "kwargs": {}}, "serialization": "json", "stream_logs": True}
    reply = http.post("/oprint/call", json=body)
    lines = [json.loads(line) for line in reply.text.splitlines()]
    printed = [line["data"] for line in lines if line["output_type"] == "stdout"]
    assert printed and all(isinstance(chunk, list) for chunk in printed)
    assert "".join(part for chunk in printed for part in chunk) == "two\nlines\n"


def test_object_takes_serialized_data_and_env_name(http):
    reply = http.post(
        "/object",
        json={
            "key": "oobj",
            "serialized_data": json.dumps([1, "a"]),
            "serialization": "json",
            "env_name": "oenv",
        },
    )
    assert reply.status_code == 200 and reply.json()["output_type"] == "success"
    assert http.get("/object", params={"key": "oobj"}).json()["data"] == json.dumps([1, "a"])
    assert "oobj" in http.get("/keys", params={"env_name": "oenv"}).json()["data"]


def test_keys_answer_data_and_keys(http):
    reply = http.get("/keys").json()
    assert "oadd" in reply["data"] and reply["data"] == reply["keys"]
    assert reply["output_type"] == "result_serialized"


def test_deleting_a_missing_key_is_fine(http):
    reply = http.post("/delete_object", json={"keys": ["never-was-here"]})
    assert reply.status_code == 200 and reply.json()["missing"] == ["never-was-here"]


def test_folder_methods(http, rh_home: Path):
    base = str(rh_home / "ofiles")
    assert http.post("/folder/method/mkdir", json={"path": base}).status_code == 200
    put = {"path": base, "contents": {"a.txt": "hello", "b.json": {"k": 1}}}
    assert http.post("/folder/method/put", json=put).status_code == 200
    assert http.post("/folder/method/put", json=put).status_code == 409  # overwrite is off by default
    names = http.post("/folder/method/ls", json={"path": base, "full_paths": False}).json()["data"]
    assert sorted(names) == ["a.txt", "b.json"]
    assert http.post("/folder/method/get", json={"path": base + "/a.txt"}).json()["data"] == "hello"
    moved = http.post("/folder/method/mv", json={"path": base + "/a.txt", "dest_path": base + "/c.txt"})
    assert moved.status_code == 200
    assert http.post("/folder/method/exists", json={"path": base + "/c.txt"}).json()["data"] is True
    assert http.post("/folder/method/rm", json={"path": base, "contents": ["c.txt"]}).status_code == 200
    assert http.post("/folder/method/exists", json={"path": base + "/c.txt"}).json()["data"] is False
    assert http.post("/folder/method/rm", json={"path": base, "recursive": True}).status_code == 200
    # outside the roots, the daemons' tokens, and the roots themselves are refused
    assert http.post("/folder/method/ls", json={"path": "/etc"}).status_code == 403
    assert http.post("/folder/method/get", json={"path": str(rh_home / "daemons")}).status_code == 403
    assert http.post("/folder/method/ls", json={"path": base + "/../../../../etc"}).status_code == 403
    assert http.post("/folder/method/rm", json={"path": "~", "recursive": True}).status_code == 400
    assert http.post("/folder/method/ls", json={"path": 5}).status_code == 400


def test_settings(http):
    reply = http.post("/settings", json={"flush_auth_cache": True, "den_auth": False})
    assert reply.status_code == 200 and reply.json()["output_type"] == "success"
    assert http.post("/settings", json={"den_auth": True}).status_code == 409
    assert http.post("/settings", json={"nonsense": 1}).status_code == 400


def test_resource_takes_the_original_body(http):
    config = {
        "name": "~/orig_add",
        "resource_type": "function",
        "fn_pointers": [str(ASSETS), "user_funcs", "add"],
    }
    pickled = base64.encodebytes(pickle.dumps((config, None, False))).decode()
    reply = http.post(
        "/resource", json={"serialized_data": pickled, "serialization": "pickle", "env_name": None}
    )
    assert reply.status_code == 200 and reply.json()["data"] == "orig_add"
    call = http.post("/orig_add/call", json={"data": {"args": [4, 5], "kwargs": {}}, "serialization": "none"})
    assert call.json() == 9
    blob = {"name": "/alice/oblob", "resource_type": "blob", "path": "x"}
    reply = http.post(
        "/resource", json={"serialized_data": json.dumps([blob, None, False]), "serialization": "json"}
    )
    assert reply.status_code == 200
    assert http.get("/resource", params={"key": "oblob"}).json()["config"]["resource_type"] == "blob"
    assert http.post("/resource", json={"serialized_data": "[]", "serialization": "json"}).status_code == 400
