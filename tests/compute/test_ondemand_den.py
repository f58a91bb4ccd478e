"""On-demand clusters with Den: provider credentials a teammate launches with, usage of launches,
and a running cluster another user reuses. A real Den (``tests/denserver.py``), real SkyPilot up to
its backend's cloud steps (``skylab``), real network-namespace SSH hosts after them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import denserver
import pytest
import skylab
import sshlab
import user_funcs as uf
from conftest import ASSETS, free_port

import runhouse as rh
from runhouse.exceptions import AuthError

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def served():
    with sshlab.lab(n=2) as made:
        yield made


@pytest.fixture(scope="module")
def cloud(sky_home, served):
    hosts = served[0]
    made = skylab.Cloud(hosts=list(hosts.hosts), private_key=hosts.private_key)
    with skylab.install(made):
        yield made


@pytest.fixture(scope="module")
def den(tmp_path_factory):
    server = denserver.start_den(tmp_path_factory.mktemp("den-ondemand"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def team(den):
    return {name: den.add_user(name) for name in ("alice", "bob", "carol")}


def _as(monkeypatch, den, token: str, home: Path) -> None:
    """Be another user from here on: their Den token and their own RH_HOME."""
    monkeypatch.setenv("RH_TOKEN", token)
    monkeypatch.setenv("RH_DEN_URL", den.url)
    monkeypatch.setenv("RH_HOME", str(home))


def _holds(folder: Path, text: str) -> bool:
    return any(p.is_file() and text in p.read_text(errors="replace") for p in folder.rglob("*"))


def test_teammate_launches_with_a_den_provider_secret(
    cloud, den, team, sky_home, monkeypatch, tmp_path_factory
):
    """Alice saves her AWS credentials to Den and shares them with Bob; Bob launches with them
    though they are nowhere on his disk (SkyPilot sees a 0600 file, removed after); Carol, not
    granted, is refused with Den's 403 before anything launches; Den's usage says who launched what
    and from when to when."""
    alice_home = tmp_path_factory.mktemp("alice-rh")
    _as(monkeypatch, den, team["alice"], alice_home)
    credentials = tmp_path_factory.mktemp("alice-aws") / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIAALICE\naws_secret_access_key = alice-s3cr3t\n")
    aws = rh.provider_secret("aws", path=str(credentials)).save()
    assert aws.rns_address == "/alice/aws"
    aws.share("bob", access_level="read")

    bob_home = tmp_path_factory.mktemp("bob-rh")
    _as(monkeypatch, den, team["bob"], bob_home)
    before = len(cloud.provisioned)
    bobs = rh.cluster(
        name="rh-bob",
        instance_type="CPU:2",
        provider="aws",
        provider_secret="/alice/aws",
        server_port=free_port(),
    ).up()
    try:
        assert len(cloud.provisioned) == before + 1
        mode, text = cloud.provisioned[-1].credentials["AWS_SHARED_CREDENTIALS_FILE"]
        assert mode == 0o600 and "aws_access_key_id = AKIAALICE" in text
        assert "AWS_SHARED_CREDENTIALS_FILE" not in os.environ
        assert not list(Path("/dev/shm").glob("rh-creds-*"))
        assert not _holds(bob_home, "alice-s3cr3t") and not _holds(sky_home, "alice-s3cr3t")
        assert rh.function(uf.add).to(bobs)(40, 2) == 42

        carol_home = tmp_path_factory.mktemp("carol-rh")
        _as(monkeypatch, den, team["carol"], carol_home)
        carols = rh.cluster(
            name="rh-carol", instance_type="CPU:2", provider="aws", provider_secret="/alice/aws"
        )
        with pytest.raises(
            AuthError, match=r"provider secret '/alice/aws' cannot be used: Den \(403\)"
        ) as refused:
            carols.up()
        assert refused.value.status == 403 and "Nothing was launched" in str(refused.value)
        assert len(cloud.provisioned) == before + 1
        from runhouse.compute.sky import SkyLauncher

        assert SkyLauncher().state("rh-carol") is None
    finally:
        _as(monkeypatch, den, team["bob"], bob_home)
        bobs.teardown()
    assert "rh-bob" in cloud.terminated

    usage = den.client(team["bob"]).get("/v1/usage", params={"cluster": "/bob/rh-bob"}).json()
    kinds = {row["kind"]: row for row in usage}
    assert set(kinds) == {"cluster_up", "cluster_down"}, usage
    for row in kinds.values():
        assert row["username"] == "bob" and row["resource"] == "aws:CPU:2 with /alice/aws"
    assert kinds["cluster_up"]["first"] <= kinds["cluster_down"]["last"]  # how long it ran
    assert (
        not den.client(team["carol"]).get("/v1/usage", params={"since": "1d"}).json()
    )  # Carol launched nothing
    shown = den.cli("usage", "--db", den.db_url, "--cluster", "/bob/rh-bob")
    assert "cluster_up" in shown.stdout and "bob" in shown.stdout


def test_a_shared_running_cluster_is_reused_not_launched(
    cloud, served, den, team, monkeypatch, tmp_path_factory
):
    """Alice saves her running on-demand cluster to Den and shares it; Bob, with his own HOME
    (no SkyPilot record of it) and RH_HOME, reaches the same machine with the key from Den and
    calls a function there; neither his SkyPilot nor Alice's launches anything."""
    hosts = served[0]
    _as(monkeypatch, den, team["alice"], tmp_path_factory.mktemp("alice-rh2"))
    gpu = rh.cluster(
        name="rh-a10x", instance_type="A10G:1", provider="aws", server_port=free_port(), autostop_mins=30
    ).up_if_not()
    try:
        launches = len(cloud.provisioned)
        gpu.save()
        assert gpu.rns_address == "/alice/rh-a10x" and gpu.config()["ssh_creds"] == "/alice/rh-a10x-ssh"
        gpu.share("bob", access_level="read")

        bob_home = tmp_path_factory.mktemp("bob-home")
        env = dict(os.environ, HOME=str(bob_home), RH_HOME=str(bob_home / ".rh"), RH_TOKEN=team["bob"])
        env["RH_DEN_URL"] = den.url
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ASSETS), env.get("PYTHONPATH", "")])
        script = textwrap.dedent(
            """
            import os
            from pathlib import Path
            import skylab
            skylab.make_sky_home(Path(os.environ["HOME"]))
            cloud = skylab.Cloud(hosts=[], private_key=Path("/nonexistent"))  # a launch would fail
            with skylab.install(cloud):
                import runhouse as rh, user_funcs as uf
                gpu = rh.cluster(name="/alice/rh-a10x")
                print("kind", type(gpu).__name__, gpu.ips)
                gpu.up_if_not()
                print("sum", rh.function(uf.add).to(gpu, name="bobs_add")(20, 22))
                print("launches", len(cloud.provisioned))
                print("sky", gpu.status()["sky"])
                try:
                    gpu.teardown()
                except rh.ConfigError as e:
                    print("teardown", e)
            """
        )
        bob = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        assert bob.returncode == 0, bob.stdout + bob.stderr
        assert f"kind OnDemandCluster {gpu.ips}" in bob.stdout
        assert "sum 42" in bob.stdout and "launches 0" in bob.stdout and "sky None" in bob.stdout
        assert "teardown SkyPilot on this machine has no cluster 'rh-a10x'" in bob.stdout
        assert len(cloud.provisioned) == launches  # Alice's SkyPilot launched nothing more either
        assert not _holds(bob_home, "PRIVATE KEY")  # the key stayed in Bob's memory
        assert (
            f"--port {gpu.server_port}"
            in hosts.ssh(next(h for h in hosts.hosts if h.address == gpu.ips[0]), "ps -eo args").stdout
        )  # the one daemon Alice started, still serving
        assert gpu.is_up()
    finally:
        gpu.teardown()


def test_azure_secret_from_the_service_principal_variables(monkeypatch):
    """Azure's credentials are a service principal in the environment (read through settings)."""
    for name, value in {
        "AZURE_CLIENT_ID": "cid",
        "AZURE_CLIENT_SECRET": "csecret",
        "AZURE_TENANT_ID": "tid",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    azure = rh.provider_secret("azure")
    assert azure.values == {"client_id": "cid", "client_secret": "csecret", "tenant_id": "tid"}
    with azure.provider_env() as env:
        assert env["AZURE_CLIENT_SECRET"] == "csecret"
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name)
    with pytest.raises(rh.ConfigError, match="no azure credentials.*AZURE_CLIENT_ID"):
        rh.provider_secret("azure")
