"""Saving, loading and sharing through a real Den, and a den_auth daemon enforcing it.

Alice, Bob and Carol are Den users. Alice works in this test process (her token in the environment);
Bob and Carol run in their own processes with their own RH_HOME, so nothing of Alice's (cluster
tokens, keys, login) is on their side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import denserver
import pytest
import user_funcs as uf
from conftest import ASSETS, free_port

import runhouse as rh
from runhouse.client.den import DenClient
from runhouse.exceptions import AuthError, ConfigError, ObjectNotFound
from runhouse.protocol.wire import CallOptions


@pytest.fixture(scope="module")
def den(tmp_path_factory):
    server = denserver.start_den(tmp_path_factory.mktemp("den"))
    server.tokens = {name: server.add_user(name) for name in ("alice", "bob", "carol")}  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def alice(den, monkeypatch):
    """This process is logged in to Den as alice (through the environment, as CI or a notebook would)."""
    monkeypatch.setenv("RH_TOKEN", den.tokens["alice"])
    monkeypatch.setenv("RH_DEN_URL", den.url)
    monkeypatch.setenv("RH_DEN_AUTH_TTL_S", "1")  # daemons started here re-check callers after 1 s
    monkeypatch.setenv("RH_DEN_HEARTBEAT_S", "0.5")
    return den.tokens["alice"]


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    return {name: tmp_path_factory.mktemp(f"home-{name}") for name in ("bob", "carol")}


def run_as(den, homes, user: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python process logged in to Den as ``user``, with a home of its own."""
    env = dict(os.environ)
    env.update(
        RH_HOME=str(homes[user]),
        RH_TOKEN=den.tokens[user],
        RH_DEN_URL=den.url,
        PYTHONPATH=os.pathsep.join([str(ASSETS), env.get("PYTHONPATH", "")]),
    )
    script = "import runhouse as rh\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def den_cluster(alice):
    """A daemon on this machine that accepts Den tokens, owned by alice."""
    cluster = rh.cluster(
        name=f"shared-{free_port()}",
        host="localhost",
        server_connection_type="none",
        server_port=free_port(),
        den_auth=True,
    ).up()
    yield cluster
    cluster.teardown()


def test_login_checks_the_token_and_keeps_it_private(den, tmp_path, monkeypatch):
    monkeypatch.setenv("RH_HOME", str(tmp_path))
    monkeypatch.delenv("RH_TOKEN", raising=False)
    monkeypatch.delenv("RH_DEN_URL", raising=False)
    with pytest.raises(AuthError, match="Den"):
        rh.login(token="not-a-token", den_url=den.url)
    assert not (tmp_path / "config.yaml").exists()
    assert rh.login(token=den.tokens["alice"], den_url=den.url) == "alice"
    config = tmp_path / "config.yaml"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert den.tokens["alice"] in config.read_text()
    assert rh.function(uf.add, name="after_login").save().rns_address == "/alice/after_login"
    assert rh.logout() is True
    assert den.tokens["alice"] not in config.read_text()
    assert rh.function(uf.add, name="after_logout").save().rns_address == "~/after_logout"


def test_cli_login_whoami_logout(den, tmp_path):
    env = dict(os.environ, RH_HOME=str(tmp_path))
    env.pop("RH_TOKEN", None)
    env.pop("RH_DEN_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runhouse", *args], env=env, capture_output=True, text=True, timeout=60)

    bad = cli("login", "--token", "nope", "--den-url", den.url)
    assert bad.returncode == 1 and "Login failed" in bad.stderr + bad.stdout
    good = cli("login", "--token", den.tokens["bob"], "--den-url", den.url)
    assert good.returncode == 0 and "as bob" in good.stdout
    assert "bob at " + den.url in cli("whoami").stdout
    assert cli("logout").returncode == 0
    assert cli("whoami").returncode == 1
    env.update(RH_TOKEN=den.tokens["carol"], RH_DEN_URL=den.url)  # logged in through the environment
    assert "carol at " + den.url in cli("whoami").stdout


def test_save_load_history_and_visibility(den, homes, alice, cluster):
    fn = rh.function(uf.add).to(cluster, name="den_add")
    fn.save()
    assert fn.rns_address == "/alice/den_add"
    assert rh.exists("den_add") and rh.exists("/alice/den_add")
    assert "den_add" in json.dumps(DenClient(den.url, alice).get_resource("alice", "den_add")["config"])
    fn.save()
    history = fn.history()
    assert [h["version"] for h in history] == [2, 1] and history[0]["created_by"] == "alice"
    again = rh.function(name="/alice/den_add")
    assert again.config()["system"]["server_port"] == cluster.server_port and again(2, 3) == 5

    load = 'rh.function(name="/alice/den_add"); print("loaded")'
    denied = run_as(den, homes, "carol", load)
    assert denied.returncode != 0 and "403" in denied.stderr and "carol" in denied.stderr
    fn.set_visibility("unlisted")
    assert "loaded" in run_as(den, homes, "carol", load).stdout
    fn.set_visibility("private")
    assert run_as(den, homes, "carol", load).returncode != 0
    fn.delete_configs()
    assert not rh.exists("/alice/den_add")
    with pytest.raises(ObjectNotFound):
        rh.function(name="/alice/den_add")


def test_bad_names_and_unknown_resources(alice):
    for bad in ("/alice/../x", "/alice/a b", "/onlyowner", "/a/b/c"):
        with pytest.raises(ConfigError):
            rh.function(name=bad)
    with pytest.raises(ObjectNotFound, match="Den"):
        rh.function(name="/alice/never_saved")
    with pytest.raises(AuthError, match="403|alice"):  # alice may not create in bob's namespace
        rh.function(uf.add).save(name="/bob/mine_now")


def test_shared_function_on_a_den_auth_cluster(den, homes, alice, den_cluster):
    fn = rh.function(uf.add).to(den_cluster, name="team_add")
    fn.save()
    call = 'print("result", rh.function(name="/alice/team_add")(20, 22))'

    denied = run_as(den, homes, "bob", call)  # not shared: Den refuses to give Bob the config
    assert denied.returncode != 0 and "403" in denied.stderr

    fn.share("bob", access_level="read")
    assert "result 42" in run_as(den, homes, "bob", call).stdout

    # read access is for calling; changing what runs on the cluster needs write on the cluster
    deploy = f"""
        import user_funcs as uf
        cluster = rh.cluster(name="{den_cluster.rns_address}")
        rh.function(uf.add).to(cluster, name="bobs_fn")
    """
    refused = run_as(den, homes, "bob", deploy)
    assert refused.returncode != 0 and "403" in refused.stderr and "write" in refused.stderr
    assert "bobs_fn" not in den_cluster.keys()

    # Carol has nothing shared: the daemon itself refuses her, even with the cluster's address
    direct = """
        from runhouse.resources.function import Function
        cluster = rh.cluster(name="{0}")
        print(Function(None, "team_add", cluster)(1, 1))
    """
    fn_cluster_share = run_as(den, homes, "carol", direct.format(den_cluster.rns_address))
    assert fn_cluster_share.returncode != 0  # cannot even load the cluster's config
    den_cluster.share("carol", access_level="read")
    assert run_as(den, homes, "carol", direct.format(den_cluster.rns_address)).stdout.strip() == "2"

    fn.revoke("bob")
    time.sleep(1.2)  # the daemon's cache of Den's answers lives 1 s here
    after = run_as(den, homes, "bob", call)
    assert after.returncode != 0 and "403" in after.stderr


def test_daemon_caches_den_answers_and_never_holds_the_user_token(den, alice, den_cluster):
    fn = rh.function(uf.add).to(den_cluster, name="cached_add")
    fn.save()
    token = DenClient(den.url, alice).cluster_token(den_cluster.rns_address)
    assert token != alice
    from runhouse.client.daemon_client import DaemonClient
    from runhouse.client.transport import Endpoint

    as_alice = DaemonClient(Endpoint("127.0.0.1", den_cluster.server_port), token)
    stub = rh.function(name="/alice/cached_add")
    stub.system.__dict__["client"] = as_alice  # call with the Den-issued token, not the cluster token
    assert stub(1, 2) == 3
    status_before = den_cluster.status()
    before = status_before["den"]
    for _ in range(50):
        assert stub(1, 2) == 3
    status_after = den_cluster.status()
    after = status_after["den"]
    assert after["cache_hits"] >= before["cache_hits"] + 50
    assert after["den_lookups"] == before["den_lookups"]
    # with the answer cached, calls with a Den token take the daemon's fast path too
    assert status_after["fast_calls"] >= status_before["fast_calls"] + 49

    # the daemon itself refuses a user Den knows but who has no access here
    carol_token = DenClient(den.url, den.tokens["carol"]).cluster_token(den_cluster.rns_address)
    as_carol = DaemonClient(Endpoint("127.0.0.1", den_cluster.server_port), carol_token)
    with pytest.raises(AuthError, match="carol") as refused:
        as_carol.call("cached_add", "call", (1, 2), {}, CallOptions())
    assert refused.value.status == 403
    with pytest.raises(AuthError, match="write"):
        as_carol.put("planted", 1)
    assert "planted" not in den_cluster.keys()

    # a token Den issued for another cluster does not open this one
    other = rh.cluster(name=f"other-{free_port()}", host="localhost", server_port=free_port())
    other.save()
    foreign = DenClient(den.url, alice).cluster_token(other.rns_address)
    wrong = DaemonClient(Endpoint("127.0.0.1", den_cluster.server_port), foreign)
    with pytest.raises(AuthError):
        wrong.keys()

    # nothing on the cluster side holds alice's own token
    folder = den_cluster.settings.daemon_dir(den_cluster.server_port)
    for path in folder.rglob("*"):
        if path.is_file():
            assert alice not in path.read_text(errors="replace"), path
    pid = int((folder / "pid").read_text())
    for proc in [pid, *[int(p) for p in os.popen(f"pgrep -P {pid}").read().split()]]:
        environ = Path(f"/proc/{proc}/environ").read_bytes()
        assert alice.encode() not in environ
    identity = json.loads((folder / "den.json").read_text())
    assert identity["cluster"] == den_cluster.rns_address and identity["token"] != alice


def test_usage_and_heartbeats_reach_den(den, homes, alice, den_cluster):
    fn = rh.function(uf.add).to(den_cluster, name="counted_add")
    fn.save()
    fn.share("bob", access_level="read")
    for _ in range(3):
        fn(1, 1)
    bob = run_as(den, homes, "bob", 'f = rh.function(name="/alice/counted_add"); [f(1, 1) for _ in range(4)]')
    assert bob.returncode == 0, bob.stderr
    den_api = DenClient(den.url, alice)
    deadline = time.time() + 10
    rows: list[dict] = []
    while time.time() < deadline:
        rows = den_api.usage(cluster=den_cluster.rns_address)
        calls = {(r["username"], r.get("resource")): r["count"] for r in rows if r["kind"] == "call"}
        if calls.get(("bob", "counted_add")) == 4 and calls.get(("alice", "counted_add")) == 3:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"usage never showed 4 calls by bob and 3 by alice: {rows}")
    kinds = {r["kind"] for r in rows}
    assert {"cluster_up", "call"} <= kinds
    status = den_api.cluster_status(den_cluster.rns_address)
    assert status["seconds_ago"] is not None and status["seconds_ago"] < 10
    assert "counted_add" in status["status"]["objects"]
    assert status["status"]["running_calls"] == 0 and "autostop_mins" in status["status"]  # for the dashboard
    report = subprocess.run(
        ["runhouse", "den", "usage", "--db", den.db_url, "--cluster", den_cluster.rns_address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0 and "bob" in report.stdout and "alice" in report.stdout


def test_secrets_in_den_are_shared_and_sent_to_a_cluster(den, homes, alice, cluster):
    s = rh.secret(values={"API_KEY": "s3cr3t-value"}, name="team_api").save()
    assert s.rns_address == "/alice/team_api"
    assert "s3cr3t-value" not in json.dumps(s.config())
    load = 'print(rh.secret(name="/alice/team_api").values["API_KEY"])'
    assert run_as(den, homes, "bob", load).returncode != 0
    s.share("bob", access_level="read")
    assert run_as(den, homes, "bob", load).stdout.strip() == "s3cr3t-value"

    placed = rh.secret(name="/alice/team_api").to(cluster, env=rh.env(name="secret_env"))
    assert placed["env_vars"] == ["API_KEY"] and "s3cr3t-value" not in json.dumps(placed)
    assert rh.function(uf.get_env).to(cluster, env="secret_env")("API_KEY") == "s3cr3t-value"
    assert "_rh_install_secret" not in cluster.keys()

    hf = rh.provider_secret("huggingface", values={"token": "hf_abc"}, name="hf").save()
    target = Path(cluster.run(["mktemp -d"])[0][1].strip()) / "hf_token"
    placed = hf.to(cluster, method="file", path=str(target))
    assert placed["files"] == [str(target)]
    assert target.read_text() == "hf_abc" and oct(target.stat().st_mode & 0o777) == "0o600"
