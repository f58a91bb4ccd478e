"""SSH clusters against real sshd servers on test hosts (network namespaces on this machine, each
with its own home), which install runhouse from a package index this test serves them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import denserver
import pytest
import sshlab
import user_funcs as uf
from conftest import ASSETS, free_port

import runhouse as rh
from runhouse.compute import bootstrap
from runhouse.compute.ssh import SSHCreds, pool_for
from runhouse.exceptions import SSHError
from runhouse.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served():
    with sshlab.lab(n=2) as made:
        yield made


@pytest.fixture(scope="module")
def hosts(served):
    return served[0]


def _creds(hosts):
    return {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}


def _cluster(hosts, index=0, **kwargs):
    kwargs.setdefault("server_port", free_port())
    kwargs.setdefault("name", f"lab{index}")
    return rh.cluster(host=[hosts.hosts[index].address], ssh_creds=_creds(hosts), **kwargs)


@pytest.fixture(scope="module")
def lab(hosts):
    cluster = _cluster(hosts)
    cluster.up_if_not()
    yield cluster
    cluster.teardown()


def test_bring_up_shows_each_step_and_serves_calls(served, capfd):
    hosts, index_url = served
    host = hosts.hosts[1]
    cluster = _cluster(hosts, 1)
    try:
        cluster.up_if_not()
        err = capfd.readouterr().err
        for step in (
            "connecting to root@",
            "using /",  # the host's own Python, found on its PATH
            "uploading runhouse-0.1.0+h",  # a wheel named after the client's source version
            "no uv on the host: installing it into the venv with pip",
            "pip: Successfully installed uv",
            f"from index-url {index_url} (pip's, from {host.home}/.config/pip/pip.conf)",  # passed on to uv
            "uv: Resolved ",  # the installer's own lines, as they come
            "uv:  + runhouse==0.1.0+h",
            "starting the daemon on 127.0.0.1",
            "daemon is up",
        ):
            assert step in err
        assert rh.function(uf.add).to(cluster)(2, 3) == 5
        assert cluster.is_up()
        assert rh.function(uf.python_prefix).to(cluster)().startswith(f"{host.home}/.rh/venvs/")
    finally:
        cluster.teardown()
    assert not cluster.is_up()
    # everything the host got lives in its own home, none of it in this machine's ~/.rh
    (venv,) = (host.home / ".rh" / "venvs").iterdir()
    assert (venv / ".rh_installed").read_text().startswith("runhouse-0.1.0+h")
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "runhouse").is_dir() and (site / "httpx").is_dir()  # from the served index


def test_everything_works_through_the_tunnel(lab, capsys):
    add = rh.function(uf.add).to(lab)
    assert add(1, 2) == 3
    assert rh.function(uf.print_and_return).to(lab)("over ssh") == 8
    assert "over ssh" in capsys.readouterr().out
    with pytest.raises(ValueError, match="remote failure"):
        rh.function(uf.fail).to(lab)("remote failure")
    counter = rh.module(uf.Counter).to(lab)(start=1, name="ssh_counter")
    assert counter.incr() == 2 and counter.value == 2
    lab.put("k", {"v": 1})
    assert lab.get("k") == {"v": 1} and "k" in lab.keys()
    assert lab.run(["echo from-the-host"])[0][:2] == (0, "from-the-host\n")
    env = rh.env(env_vars={"ON_HOST": "yes"}, name="ssh_env")
    assert rh.function(uf.get_env).to(lab, env=env)("ON_HOST") == "yes"
    status = lab.status()
    assert status["port"] == lab.server_port and {w["name"] for w in status["workers"]} >= {
        "default_env",
        "ssh_env",
    }


def test_the_daemon_listens_only_on_the_hosts_loopback(hosts, lab):
    host = hosts.hosts[0]
    probe = f"import socket; s=socket.socket(); s.settimeout(2); print(s.connect_ex(('{host.address}', {lab.server_port})))"
    out = hosts.netns_exec(host, [sys.executable, "-c", probe])
    assert out.stdout.strip() != "0"  # not reachable on the host's network address


def test_a_second_cluster_object_reuses_the_tunnel_and_installs_nothing(hosts, lab, capfd):
    # how fast this is: bench/ssh.py ("warm up_if_not()")
    port = lab.client.endpoint.port
    again = rh.cluster(
        name="again", host=[hosts.hosts[0].address], ssh_creds=_creds(hosts), server_port=lab.server_port
    )
    capfd.readouterr()
    again.up_if_not()
    assert again.client.endpoint.port == port  # the same tunnel
    assert again.get("k") == {"v": 1}
    assert "install" not in capfd.readouterr().err


def test_user_code_is_synced_with_rsync(lab, tmp_path):
    project = tmp_path / "proj"
    (project / "pkgx").mkdir(parents=True)
    (project / "pkgx" / "__init__.py").write_text("")
    (project / "pkgx" / "work.py").write_text("def where():\n    return __file__\n")
    (project / "big.log").write_text("x" * 1000)
    (project / ".gitignore").write_text("*.log\n")
    sys.path.insert(0, str(project))
    try:
        import pkgx.work

        remote_file = rh.function(pkgx.work.where).to(lab)()
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("pkgx", None)
        sys.modules.pop("pkgx.work", None)
    assert "/.rh/code/proj-" in remote_file and remote_file.endswith("pkgx/work.py")
    synced = remote_file.rsplit("/pkgx/", 1)[0]
    assert lab.run([f"ls -a {synced}"])[0][1].split() == [".", "..", ".gitignore", "pkgx"]  # *.log ignored


def test_rsync_and_ssh(lab, tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a.txt").write_text("alpha")
    lab.rsync(str(tmp_path / "up"), "/tmp/rh-rsync-test", up=True, contents=True)
    assert lab.run(["cat /tmp/rh-rsync-test/a.txt"])[0][1] == "alpha"
    lab.rsync("/tmp/rh-rsync-test/", str(tmp_path / "down"), up=False)
    assert (tmp_path / "down" / "a.txt").read_text() == "alpha"
    assert lab.ssh("test -f /tmp/rh-rsync-test/a.txt") == 0
    assert lab.ssh("exit 7") == 7


@pytest.mark.parametrize("kind", ["tls", "none"])
def test_other_connection_types(hosts, kind):
    cluster = _cluster(hosts, 1, server_connection_type=kind)
    try:
        cluster.up_if_not()
        endpoint = cluster.client.endpoint
        assert endpoint.host == hosts.hosts[1].address and endpoint.port == cluster.server_port
        assert endpoint.scheme == ("https" if kind == "tls" else "http")
        assert rh.function(uf.add).to(cluster)(20, 22) == 42
    finally:
        cluster.teardown()


def test_autostop_stops_an_idle_daemon(hosts):
    cluster = _cluster(hosts, 1, autostop_mins=0.05)  # three seconds
    cluster.up_if_not()
    try:
        assert rh.function(uf.add).to(cluster)(1, 1) == 2
        deadline = time.monotonic() + 30
        while cluster.is_up():
            assert time.monotonic() < deadline, "the daemon should stop itself when idle"
            time.sleep(1)
    finally:
        cluster.teardown()


def test_unreachable_host_fails_at_once(hosts):
    # the route refuses at once: the error is the connect failure, not a timeout
    cluster = rh.cluster(name="nowhere", host=[hosts.unreachable_address()], ssh_creds=_creds(hosts))
    with pytest.raises(SSHError, match=r"cannot reach root@.*\(step: connect\)") as info:
        cluster.up_if_not()
    assert "did not answer" not in str(info.value)


def test_wrong_key_is_refused(hosts, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    cluster = rh.cluster(
        name="badkey",
        host=[hosts.hosts[0].address],
        ssh_creds={"ssh_user": "root", "ssh_private_key": str(other)},
    )
    with pytest.raises(SSHError, match=r"refused the login \(step: connect\): wrong key for root"):
        cluster.up_if_not()


def test_password_login_and_wrong_password(hosts):
    good = rh.cluster(
        name="pw",
        host=[hosts.hosts[0].address],
        python="/nonexistent/python3",
        ssh_creds={"ssh_user": hosts.password_user, "password": hosts.password},
    )
    with pytest.raises(
        SSHError, match=r"step 'find python' failed .*/nonexistent/python3 is not a Python 3.10"
    ):
        good.up_if_not()  # logged in with the password; the next step names what is missing
    bad = rh.cluster(
        name="pw-bad",
        host=[hosts.hosts[0].address],
        ssh_creds={"ssh_user": hosts.password_user, "password": "not-the-password"},
    )
    with pytest.raises(SSHError, match="wrong password"):
        bad.up_if_not()


def test_setup_failure_names_step_host_and_output(hosts, tmp_path):
    # A Python that passes the version check but cannot make virtual environments.
    fake = tmp_path / "python3"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = "-c" ]; then echo True; exit 0; fi\n'
        'echo "Error: ensurepip is not available (install python3-venv)" >&2; exit 1\n'
    )
    fake.chmod(0o755)
    cluster = rh.cluster(
        name="novenv",
        host=[hosts.hosts[1].address],
        ssh_creds=_creds(hosts),
        python=str(fake),
        server_port=free_port(),
    )
    with pytest.raises(SSHError) as info:
        cluster.up_if_not()
    message = str(info.value)
    assert f"step 'venv' failed on root@{hosts.hosts[1].address}" in message
    assert "ensurepip is not available" in message  # the host's own words


def test_daemon_that_does_not_come_up(hosts):
    host = hosts.hosts[1]
    port = free_port()
    squatter = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host.netns,
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import socket, time
        s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen(); time.sleep(60)
    """),
        ]
    )
    try:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"
        deadline = time.monotonic() + 30
        while hosts.netns_exec(host, [sys.executable, "-c", probe]).returncode != 0:
            assert time.monotonic() < deadline, "the squatter never listened"
            time.sleep(0.1)
        cluster = _cluster(hosts, 1, server_port=port)
        with pytest.raises(
            SSHError, match=r"(?s)step 'start daemon' failed on root@.*Could not start the daemon"
        ):
            cluster.up_if_not()
    finally:
        squatter.kill()
        squatter.wait()


def test_ssh_creds_from_a_saved_secret(hosts, lab):
    rh.provider_secret("ssh", values={"ssh_user": "root"}, path=str(hosts.private_key), name="lab-key").save()
    cluster = rh.cluster(
        name="from-secret",
        host=[hosts.hosts[0].address],
        ssh_creds="lab-key",
        server_port=lab.server_port,
    )
    cluster.up_if_not()
    assert rh.function(uf.add).to(cluster, name="add_from_secret")(5, 5) == 10
    assert cluster.config()["ssh_creds"] == "lab-key"


RELAY = """
import socket, sys, threading
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def pump():
    while data := sock.recv(65536):
        sys.stdout.buffer.write(data); sys.stdout.buffer.flush()
threading.Thread(target=pump, daemon=True).start()
while data := sys.stdin.buffer.read1(65536):
    sock.sendall(data)
"""


def test_proxy_command(hosts, lab, tmp_path):
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    host = hosts.hosts[0]
    creds = dict(_creds(hosts), ssh_proxy_command=f"{sys.executable} {relay} {host.address} 22")
    cluster = rh.cluster(
        name="via-proxy",
        host=[host.address],
        ssh_creds=creds,
        server_port=lab.server_port,
    )
    cluster.up_if_not()
    assert rh.function(uf.add).to(cluster, name="add_via_proxy")(3, 4) == 7


def test_env_with_reqs_on_an_ssh_host(hosts, tmp_path):
    # The test hosts cannot reach a package index; this machine serves them a one-package index
    # (a folder per project, as a simple index is laid out), named in the cluster's default env.
    wheels = tmp_path / "index" / "six"
    wheels.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), "six==1.16.0"],
        check=True,
        timeout=120,
    )
    host = hosts.hosts[1]
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            host.gateway,
            "--directory",
            str(tmp_path / "index"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{host.gateway}:{port}/"
    index = {"UV_DEFAULT_INDEX": url, "PIP_INDEX_URL": url, "UV_HTTP_TIMEOUT": "10"}
    cluster = _cluster(hosts, 1, default_env=rh.env(env_vars=index))
    try:
        cluster.up_if_not()
        env = rh.env(reqs=["six==1.16.0"], name="ssh_six", venv=True)
        assert rh.function(uf.module_version).to(cluster, env=env, name="six_on_host")("six") == "1.16.0"
        bad = rh.env(reqs=["rh-not-served-anywhere==1.0"], name="ssh_bad", venv=True)
        with pytest.raises(rh.EnvSetupError, match="rh-not-served-anywhere"):
            rh.function(uf.add).to(cluster, env=bad, name="add_bad_env")
        assert rh.function(uf.add).to(cluster)(1, 1) == 2
    finally:
        server.terminate()
        server.wait()
        cluster.teardown()


def test_python_is_found_on_the_hosts_path(hosts):
    session = pool_for(load_settings().home).session(
        hosts.hosts[0].address, SSHCreds.from_dict(_creds(hosts))
    )
    found = bootstrap.find_python(session, None)
    rc, out, _ = session.run(f"{found} -c 'import sys; print(sys.version_info >= (3, 10))'")
    assert rc == 0 and out.strip() == "True"
    assert found.startswith("/")  # a real path on the host, from its PATH


def test_an_open_ssh_shell_keeps_autostop_away(hosts):
    # The shell opens first (a slow login on a busy machine must not race the 3 s idle limit).
    shell = subprocess.Popen(
        [*hosts.ssh_argv(hosts.hosts[0]), "-tt", "echo logged-in; sleep 60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    cluster = _cluster(hosts, 0, autostop_mins=0.05)  # three seconds
    try:
        assert shell.stdout is not None and b"logged-in" in shell.stdout.readline()
        cluster.up_if_not()
        time.sleep(7)
        assert cluster.is_up(), "someone is logged in: the daemon must stay"
        shell.kill()  # the client goes away, so the session on the host ends
        shell.wait(timeout=20)
        deadline = time.monotonic() + 30
        while cluster.is_up():
            assert time.monotonic() < deadline, "idle again after the shell closed: it should stop"
            time.sleep(1)
    finally:
        shell.kill()
        cluster.teardown()


def test_ssh_creds_from_a_den_secret_for_a_granted_user(hosts, lab, tmp_path_factory, monkeypatch):
    """Bob brings up and uses Alice's SSH cluster with a key he only ever gets from Den; a key
    rotated in Den is what his next process uses."""
    den = denserver.start_den(tmp_path_factory.mktemp("den-ssh"))
    try:
        alice, bob = den.add_user("alice"), den.add_user("bob")
        monkeypatch.setenv("RH_TOKEN", alice)
        monkeypatch.setenv("RH_DEN_URL", den.url)
        key = rh.provider_secret(
            "ssh", values={"ssh_user": "root"}, path=str(hosts.private_key), name="lab-key"
        ).save()
        assert key.rns_address == "/alice/lab-key"
        cluster = rh.cluster(
            name="den-lab",
            host=[hosts.hosts[0].address],
            ssh_creds="lab-key",
            server_port=lab.server_port,
        )
        assert cluster.config()["ssh_creds"] == "/alice/lab-key"
        cluster.save()
        for resource in (key, cluster):
            resource.share("bob", access_level="read")

        bob_home = tmp_path_factory.mktemp("bob-home")
        env = dict(os.environ, RH_HOME=str(bob_home), RH_TOKEN=bob, RH_DEN_URL=den.url)
        env["PYTHONPATH"] = os.pathsep.join([str(ASSETS), env.get("PYTHONPATH", "")])
        script = textwrap.dedent(
            """
            import runhouse as rh, user_funcs as uf
            lab = rh.cluster(name="/alice/den-lab").up_if_not()
            assert lab.ssh_creds.ssh_private_key is None  # the key stays in memory
            print("sum", rh.function(uf.add).to(lab, name="bobs_add")(20, 22))
            print("ls", lab.run(["echo hi"])[0][1].strip())
            """
        )

        def as_bob() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
            )

        first = as_bob()
        assert "sum 42" in first.stdout and "ls hi" in first.stdout, first.stderr
        assert not any(
            p.is_file() and "PRIVATE KEY" in p.read_text(errors="replace") for p in bob_home.rglob("*")
        )

        other_key = tmp_path_factory.mktemp("rotated") / "id_other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
        rh.provider_secret("ssh", values={"ssh_user": "root"}, path=str(other_key), name="lab-key").save()
        rotated = as_bob()  # the host does not know the new key: Bob's next process is refused
        assert rotated.returncode != 0 and "refused the login" in rotated.stderr
        rh.provider_secret(
            "ssh", values={"ssh_user": "root"}, path=str(hosts.private_key), name="lab-key"
        ).save()
        assert "sum 42" in as_bob().stdout
    finally:
        den.stop()


def test_den_auth_on_an_ssh_cluster(hosts, tmp_path_factory, monkeypatch):
    """The daemon on an SSH host gets its own Den identity and asks Den (across the network)
    about callers who present Den-issued tokens through the tunnel."""
    host = hosts.hosts[1]
    data = tmp_path_factory.mktemp("den-net")
    port = free_port()
    db = f"sqlite:///{data / 'den.sqlite'}"
    subprocess.run(
        [sys.executable, "-m", "runhouse.cli", "den", "start", "--host", host.gateway, "--port", str(port),
         "--db", db, "--data-dir", str(data)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    den = denserver.DenServer(f"http://{host.gateway}:{port}", db, data, dict(os.environ))
    cluster = None
    try:
        tokens = {name: den.add_user(name) for name in ("alice", "bob", "carol")}
        monkeypatch.setenv("RH_TOKEN", tokens["alice"])
        monkeypatch.setenv("RH_DEN_URL", den.url)
        cluster = _cluster(hosts, 1, name="den-ssh", den_auth=True)
        cluster.up()
        assert cluster.rns_address == "/alice/den-ssh"
        assert rh.function(uf.add).to(cluster, name="guarded_add")(2, 2) == 4  # the owner's cluster token
        cluster.share("carol", access_level="read")
        from runhouse.client.daemon_client import DaemonClient
        from runhouse.client.den import DenClient
        from runhouse.protocol.wire import CallOptions

        endpoint = cluster._remote.endpoint()  # the SSH tunnel to the daemon
        as_user = {
            name: DaemonClient(endpoint, DenClient(den.url, tokens[name]).cluster_token("/alice/den-ssh"))
            for name in ("bob", "carol")
        }
        data_only = CallOptions(serialization="json")
        assert as_user["carol"].call("guarded_add", "call", (20, 22), {}, data_only) == 42
        with pytest.raises(rh.AuthError, match="json") as no_pickles:  # read access: no pickles
            as_user["carol"].call("guarded_add", "call", (20, 22), {}, CallOptions())
        assert no_pickles.value.status == 403
        with pytest.raises(rh.AuthError, match="bob") as refused:
            as_user["bob"].call("guarded_add", "call", (1, 1), {}, data_only)
        assert refused.value.status == 403
        assert cluster.status()["den"]["den_lookups"] >= 2
    finally:
        if cluster is not None:
            cluster.teardown()
        den.stop()
