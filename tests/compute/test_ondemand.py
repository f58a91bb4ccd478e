"""On-demand clusters through SkyPilot, on network-namespace SSH hosts instead of a cloud.

SkyPilot's own objects, optimizer, catalog (tests/compute/skylab.py writes it) and cluster records
run for real; only the backend's steps that reach a cloud are replaced (skylab.netns_backend), so
our bootstrap, calls, status and teardown after them are real.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import skylab
import sshlab
import user_funcs as uf
from conftest import free_port
from typer.testing import CliRunner

import runhouse as rh
from runhouse.exceptions import ConfigError

pytestmark = pytest.mark.slow


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


def _a10x(**kwargs):
    kwargs.setdefault("server_port", free_port())
    return rh.cluster(name="rh-a10x", instance_type="A10G:1", provider="aws", **kwargs)


def test_arguments_are_validated_by_skypilot(sky_home):
    with pytest.raises(ConfigError, match="SkyPilot refused.*nope.huge"):
        rh.cluster(name="x", instance_type="nope.huge", provider="aws")
    with pytest.raises(ConfigError, match="disk_size"):
        rh.cluster(name="x", instance_type="A10G:1", provider="aws", disk_size=-5)
    with pytest.raises(ConfigError, match="provider='azur'"):
        rh.cluster(name="x", instance_type="A10G:1", provider="azur")
    with pytest.raises(ConfigError, match="num_nodes must be 1 or more"):
        rh.cluster(name="x", instance_type="A10G:1", provider="aws", num_nodes=0)
    with pytest.raises(ConfigError, match="ssh_creds"):
        rh.cluster(name="x", instance_type="A10G:1", provider="aws", ssh_creds={"ssh_user": "me"})
    with pytest.raises(ConfigError, match="unknown rh.cluster argument"):
        rh.cluster(name="x", instance_type="A10G:1", provider="aws", colour="blue")
    with pytest.raises(ConfigError, match="namespace"):
        rh.cluster(name="x", instance_type="A10G:1", provider="aws", namespace="ml")


def test_config_round_trip_keeps_every_argument(sky_home):
    made = rh.ondemand_cluster(
        name="rt",
        instance_type="A10G:1",
        provider="aws",
        num_instances=1,
        use_spot=True,
        region="us-east-1",
        zone="us-east-1a",
        disk_size=200,
        image_id="docker:python:3.11-slim",
        memory="16+",
        open_ports=[8080],
        autostop_mins=45,
    )
    config = made.config()
    assert config["resource_subtype"] == "OnDemandCluster"
    rebuilt = rh.OnDemandCluster.from_config(config)
    assert isinstance(rebuilt, rh.OnDemandCluster) and rebuilt.config() == config
    made.save("~/rt")
    loaded = rh.cluster(name="~/rt")
    assert isinstance(loaded, rh.OnDemandCluster)
    assert {k: v for k, v in loaded.config().items() if k != "rns_address"} == {
        k: v for k, v in config.items() if k != "rns_address"
    }
    with pytest.raises(ConfigError, match="no machines yet"):
        loaded.keys()
    assert not loaded.is_up()


def test_seed_line_launches_serves_and_tears_down(cloud, served, capfd, caplog):
    hosts = served[0]
    gpu = _a10x(autostop_mins=30).up_if_not()
    assert f"--port {gpu.server_port}" in hosts.ssh(hosts.hosts[0], "ps -eo args").stdout
    try:
        out = capfd.readouterr()
        assert "[rh-a10x] daemon is up" in out.err  # our bootstrap's progress
        assert "sky-payload" not in out.out + out.err  # SkyPilot's progress is for a terminal
        assert "Considered resources" in caplog.text and "g5.xlarge" in caplog.text  # SkyPilot's table
        assert len(cloud.provisioned) == 1
        chosen = cloud.provisioned[0].resources
        assert chosen.instance_type == "g5.xlarge" and chosen.region == "us-east-1"  # the cheaper region
        assert cloud.autostop["rh-a10x"] == 30  # SkyPilot stops the machines too
        assert gpu.ips == [cloud.provisioned[0].host]

        remote_add = rh.function(uf.add).to(gpu)
        assert remote_add(1, 2) == 3

        status = gpu.status()
        assert status["sky"]["status"] == "UP"
        assert status["sky"]["autostop_mins"] == 30
        assert "g5.xlarge" in status["sky"]["resources"]

        # up_if_not reuses the running machines and daemon; a fresh handle does too
        gpu.up_if_not()
        again = _a10x(server_port=gpu.server_port).up_if_not()
        assert len(cloud.provisioned) == 1
        assert rh.function(uf.add).to(again)(2, 3) == 5

        listed = CliRunner().invoke(_app(), ["cluster", "list"])
        assert listed.exit_code == 0, listed.output
        assert "rh-a10x" in listed.output and "UP" in listed.output
    finally:
        gpu.teardown()
    assert cloud.terminated == ["rh-a10x"]
    assert gpu.status()["sky"] is None and not gpu.is_up()
    host = next(h for h in hosts.hosts if h.address == cloud.provisioned[0].host)
    assert f"--port {gpu.server_port}" not in hosts.ssh(host, "ps -eo args").stdout  # our daemon is gone too


def test_provider_secret_and_cli_down(cloud, served):
    """A launch with a saved provider secret: SkyPilot sees the credentials in a 0600 file named by
    AWS_SHARED_CREDENTIALS_FILE, which is gone afterwards; `runhouse cluster down` terminates."""
    rh.provider_secret(
        "aws", values={"access_key": "AKIATEST", "secret_key": "s3cr3t"}, name="team-aws"
    ).save("~/team-aws")
    made = rh.cluster(
        name="rh-cpu",
        instance_type="CPU:2",
        provider="aws",
        provider_secret="~/team-aws",
        server_port=free_port(),
    ).up()
    assert made.is_up()
    launched = cloud.provisioned[-1]
    assert launched.resources.instance_type == "m6i.large"  # CPU:2 -> the 2-vCPU type
    mode, text = launched.credentials["AWS_SHARED_CREDENTIALS_FILE"]
    assert mode == 0o600 and "aws_access_key_id = AKIATEST" in text
    assert "AWS_SHARED_CREDENTIALS_FILE" not in os.environ
    assert not list(Path("/dev/shm").glob("rh-creds-*"))  # removed after the launch
    result = CliRunner().invoke(_app(), ["cluster", "down", "rh-cpu"])
    assert result.exit_code == 0, result.output
    assert "rh-cpu" in cloud.terminated
    assert not made.is_up()
    result = CliRunner().invoke(_app(), ["cluster", "down", "rh-cpu"])
    assert result.exit_code == 1 and "no cluster 'rh-cpu'" in result.output


def _app():
    from runhouse.cli import app

    return app


def test_install_hint_without_skypilot(tmp_path):
    """Without the extra, an on-demand cluster says how to get it (and nothing else breaks)."""
    blocker = tmp_path / "sky.py"
    blocker.write_text("raise ImportError('no skypilot here')\n")
    code = (
        "import runhouse as rh\n"
        "try:\n"
        "    rh.cluster(name='x', instance_type='A10G:1', provider='aws')\n"
        "except rh.ConfigError as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([os.sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert 'pip install "runhouse[sky]"' in out.stdout, out.stdout + out.stderr


def _settled(host, quiet_s: float = 2.0, limit_s: float = 60.0) -> float:
    """SkyPilot's last active time on ``host`` once it has stopped moving for ``quiet_s``."""
    deadline = time.monotonic() + limit_s
    seen = skylab.skylet_last_active(host)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = skylab.skylet_last_active(host)
        if now == seen:
            return now
        seen = now
    raise AssertionError(f"SkyPilot's last active time on {host.address} kept moving for {limit_s} s")


def test_skypilot_autostop_counts_our_calls_as_activity(cloud, served, monkeypatch):
    """SkyPilot's autostop counts idleness from the last active time in the head's skylet state,
    which only its own jobs reset; while our daemon runs a call, our keeper moves it forward, and
    an idle daemon leaves it alone (so SkyPilot still stops an idle cluster on time)."""
    from runhouse.compute import sky

    monkeypatch.setattr(sky, "KEEP_AWAKE_EVERY_S", 0.5)
    hosts = served[0]
    busy = rh.cluster(
        name="rh-busy", instance_type="CPU:2", provider="aws", autostop_mins=5, server_port=free_port()
    ).up()
    try:
        head = cloud.head_of("rh-busy")
        assert cloud.autostop["rh-busy"] == 5 and skylab.skylet_last_active(head) > 0  # set at launch
        idle_since = _settled(head)
        sleeper = rh.function(uf.sleep_for).to(busy)
        idle_since = _settled(head)  # sending the function was activity too
        started = time.time()
        sleeper(4)
        assert skylab.skylet_last_active(head) >= started + 2.5  # refreshed during the call, not just at it
        after = _settled(head)
        assert after > idle_since and after <= time.time() - 2  # idle again: the clock runs from the call
    finally:
        busy.teardown()
    assert f"--port {busy.server_port}" not in hosts.ssh(head, "ps -eo args").stdout
