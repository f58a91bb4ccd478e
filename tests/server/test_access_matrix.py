"""The access matrix of docs/security.md, walked cell by cell against a real den_auth daemon with
tokens a real Den issued.

Callers: the owner's cluster token, a user with write on the cluster, one with read on it, one with
read on a single function only, a Den user with no access, no token, and a token of another
cluster. Requests: every daemon route, and on the call route every serialization and option that
changes what may happen (pickles, stored results, run names, attribute reads and writes, shared
memory). Each cell is checked by status; a refused request must also leave the cluster as it was,
and a refused pickle must not have been unpickled (its payload touches a file when it is).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import denserver
import httpx
import pytest
import trust_targets as tt
from conftest import ASSETS, free_port

import runhouse as rh
from runhouse.client.den import DenClient
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, GETATTR, SETATTR, frame_bytes
from runhouse.server.app import ROUTES

LEVELS = {"none": 0, "read": 1, "write": 2}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    need: str  # "open", "read" or "write"
    body: Callable[[str, Path], tuple[bytes, str]] | None = None  # (tag, marker) -> (body, content type)


def _json(value: Any) -> Callable[[str, Path], tuple[bytes, str]]:
    return lambda tag, marker: (json.dumps(value).encode(), "application/json")


def _call(
    ser: str, args: list[Any] | None = None, **options: Any
) -> Callable[[str, Path], tuple[bytes, str]]:
    """A JSON-envelope call; with ``pickle`` the payload is one that touches ``marker`` when unpickled."""

    def make(tag: str, marker: Path) -> tuple[bytes, str]:
        data: Any = {"args": args if args is not None else [tag], "kwargs": {}}
        if ser == "pickle":
            data = base64.b64encode(pickle.dumps(tt.RunsOnUnpickle(str(marker)))).decode()
        fields = {k: (v.format(tag=tag) if isinstance(v, str) else v) for k, v in options.items()}
        return json.dumps({"data": data, "serialization": ser, **fields}).encode(), "application/json"

    return make


def _frames(ser: str, **header: Any) -> Callable[[str, Path], tuple[bytes, str]]:
    def make(tag: str, marker: Path) -> tuple[bytes, str]:
        if ser == "pickle":
            payload = pickle.dumps(tt.RunsOnUnpickle(str(marker)))
        else:
            payload = json.dumps({"args": [tag], "kwargs": {}}).encode()
        fields = {k: (v.format(tag=tag) if isinstance(v, str) else v) for k, v in header.items()}
        return frame_bytes({"serialization": ser, **fields}, payload), FRAMES_CONTENT_TYPE

    return make


def _put(ser: str) -> Callable[[str, Path], tuple[bytes, str]]:
    def make(tag: str, marker: Path) -> tuple[bytes, str]:
        if ser == "pickle":
            data: Any = base64.b64encode(pickle.dumps(tt.RunsOnUnpickle(str(marker)))).decode()
        else:
            data = {"planted": tag}
        return json.dumps(
            {"key": f"put-{tag}", "data": data, "serialization": ser}
        ).encode(), "application/json"

    return make


def _files(**fields: Any) -> Callable[[str, Path], tuple[bytes, str]]:
    """A file-route body; ``{home}`` is the daemon's $RH_HOME (inside the roots), ``{tag}`` the cell."""

    def make(tag: str, marker: Path) -> tuple[bytes, str]:
        home = os.environ["RH_HOME"]
        body = {k: (v.format(home=home, tag=tag) if isinstance(v, str) else v) for k, v in fields.items()}
        return json.dumps(body).encode(), "application/json"

    return make


def _original_resource(tag: str, marker: Path) -> tuple[bytes, str]:
    data = base64.encodebytes(pickle.dumps(tt.RunsOnUnpickle(str(marker)))).decode()
    return json.dumps({"serialized_data": data, "serialization": "pickle"}).encode(), "application/json"


def _upload(tag: str, marker: Path) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return frame_bytes(
        {"name": f"up-{tag}", "manifest": {"a.txt": [2, 1]}}, buf.getvalue()
    ), FRAMES_CONTENT_TYPE


CASES = [
    Case("check", "GET", "/check", "open"),
    # calls: data-only ones need read, anything that runs caller code or writes needs write
    Case("call json", "POST", "/echo/call", "read", _call("json")),
    Case("call none", "POST", "/echo/call", "read", _call("none")),
    Case("call json streaming logs", "POST", "/echo/call", "read", _call("json", stream_logs=True)),
    Case("call frames json", "POST", "/echo/call", "read", _frames("json")),
    Case("call query string", "GET", "/echo/call?x=1", "read"),
    Case("call with timeout", "POST", "/echo/call", "read", _call("json", timeout=30)),
    Case("call pickle envelope", "POST", "/echo/call", "write", _call("pickle")),
    Case("call frames pickle", "POST", "/echo/call", "write", _frames("pickle")),
    Case(
        "call stored result", "POST", "/echo/call", "write", _call("json", remote=True, run_name="res-{tag}")
    ),
    Case("call named run", "POST", "/echo/call", "write", _call("json", run_name="run-{tag}")),
    Case("call query run_name", "GET", "/echo/call?run_name=q-run", "write"),
    Case("call shared memory", "POST", "/echo/call", "write", _frames("json", shm=True)),
    Case("method call", "POST", "/box/get", "read", _call("json", args=[])),
    Case("getattr public", "POST", f"/box/{GETATTR}", "read", _call("json", args=["value"])),
    Case("getattr private", "POST", f"/box/{GETATTR}", "write", _call("json", args=["_secret"])),
    Case("getattr dunder", "POST", f"/box/{GETATTR}", "write", _call("json", args=["__dict__"])),
    Case("setattr", "POST", f"/box/{SETATTR}", "write", _call("json", args=["value", 99])),
    # the daemon's own routes
    Case("status", "GET", "/status", "read"),
    Case("keys", "GET", "/keys", "read"),
    Case("get object", "GET", "/object?key=data&serialization=json", "read"),
    Case("get resource", "GET", "/resource?key=echo", "read"),
    Case("envs", "GET", "/envs", "read"),
    Case("logs", "POST", "/logs", "read", _json({"run_name": "no-such-run"})),
    Case("put json", "POST", "/object", "write", _put("json")),
    Case("put pickle", "POST", "/object", "write", _put("pickle")),
    Case("rename", "POST", "/rename", "write", _json({"key": "data", "new_key": "data"})),
    Case("delete", "POST", "/delete_object", "write", _json({"keys": ["no-such-key"]})),
    Case(
        "deploy",
        "POST",
        "/resource",
        "write",
        lambda tag, marker: (
            json.dumps(
                {
                    "key": f"dep-{tag}",
                    "spec": {"module": "trust_targets", "qualname": "echo", "root": str(ASSETS)},
                    "serialization": "json",
                }
            ).encode(),
            "application/json",
        ),
    ),
    Case(
        "create env",
        "POST",
        "/create_env",
        "write",
        lambda tag, marker: _json({"name": f"env-{tag}"})(tag, marker),
    ),
    Case("kill env", "POST", "/kill_env", "write", _json({"name": "no-such-env"})),
    Case(
        "run bash", "POST", "/run_bash", "write", lambda tag, m: _json({"commands": [f"touch {m}"]})(tag, m)
    ),
    Case("folder sync", "POST", "/folder/sync", "write", _json({"name": "f", "manifest": {}})),
    Case("folder upload", "POST", "/folder/upload", "write", _upload),
    # the original system's routes; a service's own description reads like a call
    Case("openapi", "GET", "/echo/openapi.json", "read"),
    Case("docs page", "GET", "/echo/docs", "read"),
    Case("deploy original body (pickle)", "POST", "/resource", "write", _original_resource),
    Case("settings", "POST", "/settings", "write", _json({"flush_auth_cache": True})),
    Case("folder ls", "POST", "/folder/method/ls", "read", _json({"path": "~", "full_paths": False})),
    Case("folder get", "POST", "/folder/method/get", "read", _json({"path": "~/rh-no-such-file"})),
    Case("folder exists", "POST", "/folder/method/exists", "read", _json({"path": "~/rh-no-such-file"})),
    Case("folder mkdir", "POST", "/folder/method/mkdir", "write", _files(path="{home}/mx-{tag}")),
    Case(
        "folder put",
        "POST",
        "/folder/method/put",
        "write",
        _files(path="{home}/mp-{tag}", contents={"f.txt": "x"}),
    ),
    Case("folder rm", "POST", "/folder/method/rm", "write", _files(path="{home}/no-such-{tag}")),
    Case(
        "folder mv",
        "POST",
        "/folder/method/mv",
        "write",
        _files(path="{home}/no-such-{tag}", dest_path="{home}/mv-{tag}"),
    ),
]

# who calls: name -> (level on the cluster, level on the function /alice/echo)
CALLERS = {
    "owner": ("write", "write"),
    "writer": ("write", "none"),
    "reader": ("read", "none"),
    "fn_reader": ("none", "read"),
    "stranger": ("none", "none"),
    "no_token": (None, None),
    "other_cluster": (None, None),
}


def expected(case: Case, caller: str) -> str:
    """``allowed`` or the status class of the refusal: ``401`` (no or unknown token), ``403``."""
    if case.need == "open":
        return "allowed"
    cluster_level, fn_level = CALLERS[caller]
    if cluster_level is None:
        return "401" if caller == "no_token" else "401/403"
    level = LEVELS[cluster_level]
    if case.path.startswith("/echo/") and case.need == "read":
        level = max(level, LEVELS[fn_level])
    return "allowed" if level >= LEVELS[case.need] else "403"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    den = denserver.start_den(tmp_path_factory.mktemp("den"))
    users = ("alice", "wanda", "rita", "otto", "dora")
    tokens = {name: den.add_user(name) for name in users}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RH_TOKEN", tokens["alice"])
        mp.setenv("RH_DEN_URL", den.url)
        cluster = rh.cluster(
            name=f"matrix-{free_port()}",
            host="localhost",
            server_connection_type="none",
            server_port=free_port(),
            den_auth=True,
        ).up()
        try:
            fn = rh.function(tt.echo).to(cluster, name="echo")
            fn.save()
            rh.module(tt.Box).to(cluster)(name="box")
            cluster.put("data", [1, 2])
            cluster.share("wanda", access_level="write")
            cluster.share("rita", access_level="read")
            fn.share("otto", access_level="read")
            other = rh.cluster(name=f"other-{free_port()}", host="localhost", server_port=free_port())
            other.save()
            alice_den = DenClient(den.url, tokens["alice"])
            owner_token = (cluster.settings.daemon_dir(cluster.server_port) / "token").read_text().strip()
            bearer = {
                "owner": owner_token,
                "writer": DenClient(den.url, tokens["wanda"]).cluster_token(cluster.rns_address),
                "reader": DenClient(den.url, tokens["rita"]).cluster_token(cluster.rns_address),
                "fn_reader": DenClient(den.url, tokens["otto"]).cluster_token(cluster.rns_address),
                "stranger": DenClient(den.url, tokens["dora"]).cluster_token(cluster.rns_address),
                "no_token": None,
                "other_cluster": alice_den.cluster_token(other.rns_address),
            }
            yield {"cluster": cluster, "bearer": bearer, "den": den, "fn": fn}
        finally:
            cluster.teardown()
            den.stop()


def _snapshot(cluster: Any, client: httpx.Client) -> dict[str, Any]:
    keys = sorted(cluster.keys())
    value = client.post(f"/box/{GETATTR}", json={"data": {"args": ["value"]}, "serialization": "json"})
    return {"keys": keys, "box.value": value.json()}


def test_every_route_has_cells() -> None:
    """A route added to the daemon without a row in the matrix fails here."""
    routes = {(method, route.path) for route in ROUTES for method in route.methods or () if method != "HEAD"}
    covered = {(case.method, case.path.split("?")[0]) for case in CASES}
    assert routes - covered == set()


@pytest.mark.parametrize("caller", list(CALLERS))
def test_access_matrix(setup: dict[str, Any], caller: str, tmp_path: Path) -> None:
    cluster = setup["cluster"]
    port = cluster.server_port
    owner = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {setup['bearer']['owner']}"},
        timeout=60,
    )
    token = setup["bearer"][caller]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120)
    wrong: list[str] = []
    for i, case in enumerate(CASES):
        tag = f"{caller}-{i}"
        marker = tmp_path / f"marker-{i}"
        want = expected(case, caller)
        before = _snapshot(cluster, owner) if want != "allowed" else None
        body, content_type = case.body(tag, marker) if case.body else (b"", "application/json")
        reply = client.request(
            case.method, case.path, content=body or None, headers={"content-type": content_type}
        )
        got = reply.status_code
        if want == "allowed":
            ok = got < 500 and got not in (401, 403)
        else:
            ok = str(got) in want.split("/")
            after = _snapshot(cluster, owner)
            if after != before:
                wrong.append(f"{case.name}: refused with {got} but changed the cluster: {before} -> {after}")
            if marker.exists():
                wrong.append(f"{case.name}: refused with {got} but its payload ran (unpickled or executed)")
        if not ok:
            wrong.append(f"{case.name} as {caller}: expected {want}, got {got} {reply.text[:200]}")
    assert not wrong, "\n".join(wrong)
    if caller == "owner":  # the owner's pickle really was unpickled: the marker proves the check above
        assert any(p.name.startswith("marker-") for p in tmp_path.iterdir())


def test_read_access_is_data_only_for_the_python_client(setup: dict[str, Any], tmp_path: Path) -> None:
    """A reader's stub sends JSON on its own and gets results; setting attributes is refused."""
    import subprocess
    import sys
    import textwrap

    den = setup["den"]
    reader_home = tmp_path / "rita"
    code = textwrap.dedent(
        """
        import runhouse as rh
        fn = rh.function(name="/alice/echo")
        print(json.dumps(fn(1, k="v")))
        """
    )
    env = dict(os.environ)
    rita = den.add_user("rita2")
    setup["fn"].share("rita2", access_level="read")
    env.update(RH_HOME=str(reader_home), RH_TOKEN=rita, RH_DEN_URL=den.url, PYTHONPATH=str(ASSETS))
    proc = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"args": [1], "kwargs": {"k": "v"}}
