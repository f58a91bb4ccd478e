"""``provider="kubernetes"``: SkyPilot's Kubernetes cloud, with the API server replaced.

SkyPilot runs for real: our arguments become its ``Resources`` (the context checked against the
kubeconfig), its optimizer checks the request fits the nodes the API server lists, and its own
``make_deploy_resources_variables`` computes the pod's spec. What cannot exist here is replaced at
the narrowest seams (tests/compute/skylab.py): SkyPilot's ``core_api(context)`` answers from the
test's nodes (after loading the kubeconfig for real), and the backend's provisioning hands back a
network-namespace SSH host as the "pod", reached through an SSH proxy command by pod name, as
SkyPilot's port-forward proxy reaches a pod. Our bootstrap, calls and teardown after it are real.
"""

from __future__ import annotations

import os
from pathlib import Path

import denserver
import pytest
import skylab
import sshlab
import user_funcs as uf
from conftest import free_port

import runhouse as rh
from runhouse.exceptions import AuthError, ConfigError

pytestmark = pytest.mark.slow

NODES = [
    {"name": "cpu-node", "cpus": 8, "memory": "32Gi"},
    {"name": "gpu-node", "cpus": 16, "memory": "64Gi", "gpu": "a10g", "gpu_count": 1},
]


@pytest.fixture(scope="module")
def served():
    with sshlab.lab(n=1) as made:
        yield made


@pytest.fixture(scope="module")
def cloud(sky_home, served):
    hosts = served[0]
    made = skylab.Cloud(hosts=list(hosts.hosts), private_key=hosts.private_key, kube_nodes=NODES)
    with skylab.install(made), skylab.kube_api(made):
        yield made


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = skylab.write_kubeconfig(tmp_path / "kubeconfig", ["lab-ctx", "other-ctx"])
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def _proxies(pod: str) -> list[str]:
    """Command lines of this machine's processes running the lab's proxy to ``pod``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "kube_proxy.py" in args and pod in args:
            found.append(args)
    return found


def test_pod_launched_in_namespace_and_context_served_and_deleted(cloud, kubeconfig):
    kube = rh.cluster(
        name="rh-kube",
        provider="kubernetes",
        instance_type="CPU:2",
        memory=4,
        namespace="ml",
        context="other-ctx",
        image_id="docker:python:3.11-slim",
        autostop_mins=10,
        server_port=free_port(),
    ).up()
    try:
        pod = cloud.pods["rh-kube-test-head"]
        assert (pod.context, pod.namespace) == ("other-ctx", "ml")  # namespace= reached SkyPilot
        assert (pod.cpus, pod.memory, pod.gpus, pod.image) == ("2.0", "4.0", "0", "python:3.11-slim")
        assert cloud.kube_calls and all(c.endswith("other-ctx") for c in cloud.kube_calls)
        assert cloud.autostop["rh-kube"] == 10 and cloud.autodown["rh-kube"]  # a pod is deleted, not stopped

        assert rh.function(uf.add).to(kube)(2, 3) == 5
        assert _proxies(pod.name)  # the daemon is reached through the pod's proxy command
        assert kube.status()["sky"]["status"] == "UP"
    finally:
        kube.teardown()
    assert "rh-kube-test-head" in cloud.deleted_pods and not cloud.pods
    assert not kube.is_up() and kube.status()["sky"] is None
    assert not list(Path("/dev/shm").glob("rh-kube-*"))  # the namespaced kubeconfig copy is gone


def test_requests_refused_by_skypilot_before_any_pod(cloud, kubeconfig):
    with pytest.raises(ConfigError, match=r"has no context 'nope' \(it has \['lab-ctx', 'other-ctx'\]\)"):
        rh.cluster(name="k1", provider="kubernetes", cpus=2, context="nope")
    with pytest.raises(ConfigError, match="namespace= and context= are for provider='kubernetes'"):
        rh.cluster(name="k1", provider="aws", instance_type="CPU:2", namespace="ml")
    too_big = rh.cluster(name="k2", provider="kubernetes", cpus=64, server_port=free_port())
    with pytest.raises(ConfigError, match="SkyPilot could not launch 'k2'.*Kubernetes"):
        too_big.up()
    no_such_gpu = rh.cluster(name="k3", provider="kubernetes", gpus="H100:1", server_port=free_port())
    with pytest.raises(ConfigError, match="SkyPilot could not launch 'k3'"):
        no_such_gpu.up()
    assert not cloud.pods and not [p for p in cloud.provisioned if p.cluster in ("k2", "k3")]


def test_kubeconfig_from_a_den_secret(cloud, tmp_path, tmp_path_factory, monkeypatch):
    """Bob launches a GPU pod with the kubeconfig Alice shared in Den; he has none on disk."""
    den = denserver.start_den(tmp_path_factory.mktemp("den-kube"))
    try:
        alice, bob, carol = (den.add_user(n) for n in ("alice", "bob", "carol"))
        monkeypatch.setenv("RH_DEN_URL", den.url)
        monkeypatch.setenv("RH_TOKEN", alice)
        source = skylab.write_kubeconfig(tmp_path / "alice-kube", ["lab-ctx"])
        shared = rh.provider_secret("kubernetes", path=str(source)).save()
        assert shared.rns_address == "/alice/kubernetes"
        shared.share("bob", access_level="read")

        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("RH_TOKEN", bob)
        monkeypatch.setenv("RH_HOME", str(tmp_path / "bob-rh"))
        assert not Path(os.path.expanduser("~/.kube/config")).exists()
        gpu = rh.cluster(
            name="rh-kube-gpu",
            provider="kubernetes",
            gpus="A10G:1",
            namespace="team",
            provider_secret="/alice/kubernetes",
            server_port=free_port(),
        ).up()
        try:
            pod = cloud.pods["rh-kube-gpu-test-head"]
            assert (pod.context, pod.namespace, pod.gpus) == ("lab-ctx", "team", "1")
            mode, text = cloud.provisioned[-1].credentials["KUBECONFIG"]
            assert mode == 0o600 and "lab-token" in text
            assert "KUBECONFIG" not in os.environ
            assert not list(Path("/dev/shm").glob("rh-creds-*")) and not list(
                Path("/dev/shm").glob("rh-kube-*")
            )
            assert rh.function(uf.add).to(gpu)(20, 22) == 42
            with pytest.raises(ConfigError, match="port-forward proxy"):  # its proxy needs Alice's kubeconfig
                gpu.save()
            with pytest.raises(denserver.httpx.HTTPStatusError):
                den.client(bob).get("/v1/resources/bob/rh-kube-gpu").raise_for_status()  # nothing saved
        finally:
            gpu.teardown()
        assert not cloud.pods

        monkeypatch.setenv("RH_TOKEN", carol)
        with pytest.raises(AuthError, match=r"'/alice/kubernetes' cannot be used: Den \(403\)"):
            rh.cluster(name="rh-carol", provider="kubernetes", cpus=2, provider_secret="/alice/kubernetes")
    finally:
        den.stop()
