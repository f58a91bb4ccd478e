"""Installing runhouse on an SSH host: the client's wheel (named after its source version), the
host's index settings passed on to uv, installer lines shown as they come, silences explained,
hosts without SFTP, and a user's own venv bringing up a host from nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sshlab
import user_funcs as uf
from conftest import free_port
from venvs import make_venv, run_outside, uv

import runhouse as rh
from runhouse.compute import bootstrap, hostprobe, wheel
from runhouse.compute.ssh import SSHCreds, pool_for
from runhouse.exceptions import SSHError
from runhouse.settings import load_settings

# -- the host's index settings, as the probe reads them on the host ----------------------------


def _probe(tmp_path: Path, env: dict[str, str], pip_conf: str = "", uv_toml: str = "") -> dict:
    home = tmp_path / "home"
    if pip_conf:
        (home / ".config" / "pip").mkdir(parents=True)
        (home / ".config" / "pip" / "pip.conf").write_text(pip_conf)
    if uv_toml:
        (home / ".config" / "uv").mkdir(parents=True)
        (home / ".config" / "uv" / "uv.toml").write_text(uv_toml)
    env = {"PATH": "/nonexistent", **env}  # no uv to find; system settings in an empty folder
    return hostprobe.probe(tmp_path / "venv", "runhouse-x.whl", env, home, etc=tmp_path / "etc")


def test_pips_index_settings_are_passed_on_to_uv(tmp_path):
    conf = "[global]\nindex-url = http://mirror.lan/simple\ntrusted-host = mirror.lan\ncert = /etc/lan.pem\n"
    facts = _probe(tmp_path, {"PIP_EXTRA_INDEX_URL": "http://a.lan/simple http://b.lan/simple"}, conf)
    assert facts["uv_args"] == [
        "--index-url", "http://mirror.lan/simple",
        "--extra-index-url", "http://a.lan/simple", "--extra-index-url", "http://b.lan/simple",
        "--allow-insecure-host", "mirror.lan",
        "--index-strategy", "unsafe-best-match",  # pip's choice across indexes, not uv's first match
    ]  # fmt: skip
    assert facts["uv_env"] == {"SSL_CERT_FILE": "/etc/lan.pem"}
    assert "index-url http://mirror.lan/simple (pip's, from " in facts["index"]
    assert "pip.conf" in facts["index"] and "PIP_EXTRA_INDEX_URL" in facts["index"]
    assert "pypi.org" not in facts["index"]


def test_the_install_section_overrides_global_and_variables_override_files(tmp_path):
    conf = "[global]\nindex-url = http://global.lan/\n[install]\nindex_url = http://install.lan/\n"
    assert _probe(tmp_path, {}, conf)["uv_args"] == ["--index-url", "http://install.lan/"]
    facts = _probe(tmp_path / "b", {"PIP_INDEX_URL": "http://env.lan/"}, conf)
    assert facts["uv_args"] == ["--index-url", "http://env.lan/"]


def test_the_systems_pip_conf_counts_and_the_users_wins(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "pip.conf").write_text(
        "[global]\nindex-url = http://site.lan/\nfind-links = /srv/w\n"
    )
    facts = _probe(tmp_path, {})
    assert facts["uv_args"] == ["--index-url", "http://site.lan/", "--find-links", "/srv/w"]
    facts = _probe(tmp_path, {}, "[global]\nindex-url = http://mine.lan/\n")
    assert facts["uv_args"] == ["--index-url", "http://mine.lan/", "--find-links", "/srv/w"]


@pytest.mark.parametrize("where", ["variable", "uv.toml"])
def test_uvs_own_settings_are_left_to_uv(tmp_path, where):
    conf = "[global]\nindex-url = http://pip-only.lan/\n"
    if where == "variable":
        facts = _probe(tmp_path, {"UV_INDEX_URL": "http://uv.lan/"}, conf)
        assert "UV_INDEX_URL=http://uv.lan/" in facts["index"]
    else:
        facts = _probe(tmp_path, {}, conf, uv_toml='[pip]\nindex-url = "http://uv.lan/"\n')
        assert "uv.toml" in facts["index"]
    assert facts["uv_args"] == [] and facts["uv_env"] == {}
    assert "pip-only.lan" in facts["pip_index"]  # pip (bringing uv in) still follows its own


def test_without_settings_the_default_index_is_named(tmp_path):
    facts = _probe(tmp_path, {})
    assert facts["uv_args"] == [] and facts["uv_env"] == {}
    assert facts["index"] == f"the default index {hostprobe.PYPI}"
    assert facts["uv"] == "" and facts["installed"] == "" and not facts["uploaded"]


# -- the client's wheel ------------------------------------------------------------------------


def test_the_wheel_is_named_after_the_source_version_and_installs(tmp_path, monkeypatch):
    source = tmp_path / "checkout"
    shutil.copytree(wheel.PACKAGE_DIR, source / "runhouse", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(wheel.PACKAGE_DIR.parent / "pyproject.toml", source)
    monkeypatch.setattr(wheel, "PACKAGE_DIR", source / "runhouse")
    first = wheel.client_wheel(tmp_path / "cache")
    assert first.name.startswith("runhouse-0.1.0+h") and first.name.endswith("-py3-none-any.whl")
    assert wheel.client_wheel(tmp_path / "cache") == first  # same source, same wheel
    with (source / "runhouse" / "compute" / "remote.py").open("a") as edited:
        edited.write("# an edit\n")
    second = wheel.client_wheel(tmp_path / "cache")
    assert second != first and first.exists()  # another source version: its own name, none overwritten

    with zipfile.ZipFile(second) as built:
        names = built.namelist()
        version = second.name.split("-")[1]
        metadata = built.read(f"runhouse-{version}.dist-info/METADATA").decode()
    assert "runhouse/den/migrations/script.py.mako" in names  # package data too
    assert not any("__pycache__" in n for n in names)
    assert f"Version: {version}" in metadata and "Requires-Dist: httpx" in metadata
    venv = tmp_path / "venv"
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv(), "pip", "install", "-q", "--no-deps", "--python", str(venv / "bin" / "python"), str(second)],
        check=True,
    )
    check = (
        "import importlib.metadata as m, runhouse._version as v; print(m.version('runhouse'), v.__version__)"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.stdout.split() == [version, "0.1.0"], out.stderr


# -- hosts -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare():
    """One host whose sshd offers no SFTP subsystem."""
    with sshlab.lab(n=1, sftp=False) as (hosts, url):
        yield hosts, url


def _creds(hosts) -> dict[str, str]:
    return {"ssh_user": "root", "ssh_private_key": str(hosts.private_key)}


def test_files_go_up_through_the_exec_channel_without_sftp(bare, tmp_path):
    hosts, _ = bare
    host = hosts.hosts[0]
    session = pool_for(load_settings().home).session(host.address, SSHCreds.from_dict(_creds(hosts)))
    local = tmp_path / "payload.bin"
    local.write_bytes(bytes(range(256)) * 1000)
    session.upload(local, "~/payload.bin")
    assert (host.home / "payload.bin").read_bytes() == local.read_bytes()
    with pytest.raises(SSHError, match=r"no SFTP subsystem .* through the exec channel"):
        session.upload(local, "~/no/such/folder/payload.bin")


def test_a_silent_installer_says_what_it_waits_on(bare, monkeypatch, capfd):
    hosts, url = bare
    host = hosts.hosts[0]
    with socket.socket() as hole:  # accepts connections, never answers
        hole.bind((host.gateway, 0))
        hole.listen(64)
        silent = f"http://{host.gateway}:{hole.getsockname()[1]}/simple/"
        sshlab.point_pip_at(host, silent)
        monkeypatch.setattr(bootstrap, "QUIET_S", 1.0)
        monkeypatch.setattr(bootstrap, "INSTALL_TIMEOUT_S", 5.0)
        cluster = rh.cluster(
            name="silent", host=[host.address], ssh_creds=_creds(hosts), server_port=free_port()
        )
        try:
            with pytest.raises(
                SSHError, match=r"step 'install uv' failed on root@.* gave no result within 5 s"
            ) as info:
                cluster.up_if_not()
        finally:
            sshlab.point_pip_at(host, url)
    assert silent in str(info.value)  # the error names the index it waited on
    err = capfd.readouterr().err
    assert (
        f"still installing: no output from pip for 1 s; it may be waiting on the package index (index-url {silent}"
        in err
    )
    assert (
        "pip: Looking in indexes: " + silent in err
    )  # the lines before the silence came as they were written


def test_a_host_without_sftp_is_brought_up(bare, capfd):
    hosts, _ = bare
    host = hosts.hosts[0]
    cluster = rh.cluster(
        name="no-sftp", host=[host.address], ssh_creds=_creds(hosts), server_port=free_port()
    )
    try:
        cluster.up_if_not()
        assert rh.function(uf.add).to(cluster)(40, 2) == 42
    finally:
        cluster.teardown()
    assert list((host.home / ".rh" / "wheels").glob("runhouse-0.1.0+h*-py3-none-any.whl"))
    assert "uv: Resolved " in capfd.readouterr().err


def test_a_users_venv_brings_up_a_fresh_host_and_calls_it(tmp_path):
    """As a user would: runhouse installed normally in a venv (no source tree), a script outside the
    repo, a host with nothing but its Python and a pip.conf naming its package index."""
    python = make_venv(tmp_path / "client")
    with sshlab.lab(n=1) as (hosts, url):
        host = hosts.hosts[0]
        proc = run_outside(
            python,
            f"""
            import runhouse as rh

            def double(x):
                return 2 * x

            lab = rh.cluster(name="fresh", host=["{host.address}"],
                             ssh_creds={{"ssh_user": "root", "ssh_private_key": "{hosts.private_key}"}})
            lab.up_if_not()
            print("RESULT", rh.function(double).to(lab)(21))
            lab.teardown()
            """,
            home=tmp_path / "home",
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT 42" in proc.stdout
    err = proc.stderr
    for line in (
        "[fresh] connecting to root@",
        "[fresh] uploading runhouse-0.1.0+h",  # built from the venv's installed files
        "[fresh] pip: Successfully installed uv",
        f"from index-url {url} (pip's, from {host.home}/.config/pip/pip.conf)",
        "[fresh] uv: Resolved ",
        "[fresh] daemon is up",
    ):
        assert line in err, err
