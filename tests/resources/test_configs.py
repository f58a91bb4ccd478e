"""Every resource's ``config()``: JSON-able, free of secret values, and enough to rebuild it.

Plus what ``rh.package`` and ``rh.folder`` do: packages in envs' requirements, folders sent to a
cluster and listed there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import user_funcs as uf
from conftest import ASSETS, free_port

import runhouse as rh
from runhouse.compute import remote
from runhouse.exceptions import ConfigError

DEMO_PKG = ASSETS / "rh_demo_pkg"
KEY_TEXT = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\ncfg-test-key-material-5f2a\n-----END OPENSSH PRIVATE KEY-----\n"
)
PASSWORD = "cfg-test-password-91c3"


def round_trip(resource: rh.Resource) -> list[rh.Resource]:
    """Check ``resource``'s config rebuilds an equal resource both ways; return the rebuilt ones."""
    cfg = resource.config()
    text = json.dumps(cfg)
    rebuilt = [
        type(resource).from_config(cfg),
        rh.Resource.from_config(cfg),
        rh.Resource.from_config(json.loads(text)),
    ]
    for again in rebuilt:
        assert type(again) is type(resource)
        assert again.config() == cfg
    return rebuilt


@pytest.fixture
def no_ssh(monkeypatch):
    """Fail any attempt to reach a host over SSH: building clusters and configs must not connect."""

    def refuse(*args, **kwargs):
        raise AssertionError("an SSH connection was opened")

    monkeypatch.setattr(remote, "pool_for", refuse)


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "id_test"
    path.write_text(KEY_TEXT)
    path.chmod(0o600)
    return path


# -- clusters ---------------------------------------------------------------------------------------
def test_local_cluster_round_trip():
    default = rh.env(reqs=["six"], env_vars={"A": "1"}, setup_cmds=["true"])
    c = rh.cluster(
        name="cfg_local", host="localhost", server_port=free_port(), default_env=default, autostop_mins=5
    )
    (again, *_) = round_trip(c)
    assert again.server_port == c.server_port and again.default_env.env_vars == {"A": "1"}
    assert not again.is_up()  # rebuilding started nothing


def test_ssh_cluster_round_trip_without_connecting_or_leaking_the_password(no_ssh, key_file):
    creds = {"ssh_user": "me", "ssh_private_key": str(key_file), "password": PASSWORD, "ssh_port": 2222}
    lab = rh.cluster(name="cfg_lab", host=["10.0.0.5"], ssh_creds=creds, autostop_mins=30)
    assert lab.server_connection_type == "ssh" and not lab.is_local()
    text = json.dumps(lab.config())
    assert PASSWORD not in text and KEY_TEXT.splitlines()[1] not in text
    assert lab.config()["ssh_creds"]["ssh_private_key"] == str(key_file)  # the path, not the key
    (again, *_) = round_trip(lab)
    assert again.hosts == ["10.0.0.5"] and again.ssh_creds.ssh_port == 2222
    tls = rh.cluster(name="cfg_tls", host="10.0.0.7", ssh_creds=creds, server_connection_type="tls")
    round_trip(tls)


def test_cluster_using_a_saved_ssh_secret_keeps_its_values_out(no_ssh):
    values = {"ssh_user": "me", "private_key": KEY_TEXT, "password": PASSWORD}
    rh.secret(values=values, provider="ssh", name="cfg-lab-key").save()
    lab = rh.cluster(name="cfg_lab_secret", host="10.0.0.5", ssh_creds="cfg-lab-key")
    assert lab.config()["ssh_creds"] == "cfg-lab-key"
    text = json.dumps(lab.config())
    assert PASSWORD not in text and "cfg-test-key-material" not in text
    (again, *_) = round_trip(lab)
    assert again.ssh_creds.ssh_user == "me" and again.ssh_creds.password == PASSWORD  # from the store


# -- envs -----------------------------------------------------------------------------------------
def test_env_round_trip(tmp_path):
    env = rh.env(
        reqs=["six==1.16.0", "conda:numpy", str(DEMO_PKG), rh.package("requests>=2")],
        env_vars={"A": "1"},
        setup_cmds=["true"],
        working_dir=str(tmp_path),
        name="cfg_env",
        venv=True,
    )
    round_trip(env)
    round_trip(rh.env())  # the default env


def test_conda_env_round_trip():
    spec = {"name": "cfg_ml", "dependencies": ["python=3.11", "numpy"]}
    round_trip(rh.conda_env(spec, reqs=["six"], env_vars={"B": "2"}))
    existing = rh.conda_env("base")  # names a conda env that exists on the cluster
    (again, *_) = round_trip(existing)
    assert again.conda_spec is None and again.conda_name == "base"


# -- functions and modules ------------------------------------------------------------------------
def test_function_not_deployed_round_trip():
    fn = rh.function(uf.add)
    (again, *_) = round_trip(fn)
    assert again.system is None and again.name == "add"
    with pytest.raises(ConfigError, match="neither local code nor a cluster"):
        again(1, 2)


def test_function_with_a_conda_env_keeps_its_kind():
    fn = rh.Function(uf.add, env=rh.conda_env({"name": "cfg_fn_ml", "dependencies": ["python=3.11"]}))
    (again, *_) = round_trip(fn)
    assert isinstance(again.env, rh.CondaEnv)


def test_deployed_function_rebuilt_from_config_calls_the_live_service(cluster):
    env = rh.env(env_vars={"CFG": "yes"}, name="cfg_fn_env")
    deployed = rh.function(uf.get_env).to(cluster, env=env, name="cfg_get_env")
    for again in round_trip(deployed):
        assert again("CFG") == "yes"


def test_deployed_module_rebuilt_from_config_calls_the_live_object(cluster):
    counter = rh.module(uf.Counter).to(cluster)(start=3, name="cfg_counter")
    first, second, third = round_trip(counter)
    assert first.incr() == 4
    assert second.incr() == 5
    assert third.value == 5 and counter.value == 5  # one live object behind every stub


def test_function_on_a_saved_cluster_round_trip(cluster):
    saved = rh.Cluster.from_config({**cluster.config(), "name": "cfg_saved_cluster"})
    saved.save()
    fn = rh.function(uf.add).to(saved, name="cfg_add_saved")
    assert fn.config()["system"]["rns_address"] == "~/cfg_saved_cluster"
    for again in round_trip(fn):
        assert again(2, 3) == 5


# -- secrets --------------------------------------------------------------------------------------
def test_secret_round_trip_never_shows_values():
    unsaved = rh.secret(values={"token": PASSWORD}, provider="huggingface", name="cfg_hf")
    assert PASSWORD not in json.dumps(unsaved.config())
    (again, *_) = round_trip(unsaved)
    assert again.config()["keys"] == ["token"] and again.values == {}  # the names, never the values

    saved = rh.secret(values={"access_key": "AKcfg", "secret_key": PASSWORD}, provider="aws", name="cfg_aws")
    saved.save()
    text = json.dumps(saved.config())
    assert PASSWORD not in text and "AKcfg" not in text
    for rebuilt in round_trip(saved):
        assert rebuilt.values["secret_key"] == PASSWORD  # values come back from the store only


# -- packages -------------------------------------------------------------------------------------
def test_package_kinds_and_requirements(tmp_path, monkeypatch):
    assert rh.package("numpy==1.26").to_requirement() == "pip:numpy==1.26"
    assert rh.package("numpy", "conda").to_requirement() == "conda:numpy"
    git = rh.package("https://github.com/org/repo.git")
    assert git.install_method == "pip" and git.to_requirement() == "pip:git+https://github.com/org/repo.git"
    assert (
        rh.package("git@github.com:org/repo.git").to_requirement()
        == "pip:git+ssh://git@github.com/org/repo.git"
    )
    assert rh.package("git+https://h/x.git@v1").to_requirement() == "pip:git+https://h/x.git@v1"

    monkeypatch.chdir(DEMO_PKG.parent)
    local = rh.package("./rh_demo_pkg", name="demo")
    assert local.install_method == "local"
    assert local.to_requirement() == str(DEMO_PKG.resolve())
    cfg = local.config()
    assert cfg["install_target"] == "./rh_demo_pkg" and cfg["local_path"] == str(DEMO_PKG.resolve())
    monkeypatch.chdir(tmp_path)  # rebuilt elsewhere, it still names the same folder
    for again in round_trip(local):
        assert again.to_requirement() == str(DEMO_PKG.resolve())
    for pkg in (rh.package("numpy==1.26"), git, rh.package("numpy", "conda", install_args="-c conda-forge")):
        round_trip(pkg)


def test_package_in_env_reqs_parses_like_its_string_form():
    env = rh.env(reqs=[rh.package("six==1.16.0"), rh.package(str(DEMO_PKG)), rh.package("numpy", "conda")])
    assert env.config()["reqs"] == ["pip:six==1.16.0", str(DEMO_PKG.resolve()), "conda:numpy"]
    assert env._parsed_reqs == [
        {"kind": "pip", "spec": "six==1.16.0"},
        {"kind": "local", "spec": str(DEMO_PKG.resolve())},
        {"kind": "conda", "spec": "numpy"},
    ]
    assert rh.env(reqs=rh.package("six")).reqs == ["pip:six"]  # a single package, like a single string


def test_package_arguments_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="install_method must be one of"):
        rh.package("numpy", "apt")
    with pytest.raises(ConfigError, match="not a directory on this machine"):
        rh.package(str(tmp_path / "missing"), "local")
    with pytest.raises(ConfigError, match="needs install_target"):
        rh.package()
    with pytest.raises(ConfigError, match="setup_cmds"):
        rh.env(reqs=[rh.package("numpy", install_args="--no-deps")])


@pytest.mark.slow
def test_local_package_installs_into_an_env_on_the_cluster(cluster):
    env = rh.env(reqs=[rh.package(str(DEMO_PKG))], name="cfg_pkg_env", venv=True)
    version = rh.function(uf.module_version).to(cluster, env=env, name="cfg_pkg_version")
    assert version("rh_demo_pkg") == "0.3.0"


# -- folders --------------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    (folder / ".hidden").write_text("h")
    (folder / "ignored.log").write_text("not sent")
    (folder / ".gitignore").write_text("*.log\n")
    return folder


SENT = [".gitignore", ".hidden", "a.txt", "sub"]


def test_local_folder_round_trip_and_ls(project, monkeypatch):
    monkeypatch.chdir(project.parent)
    here = rh.folder("project", name="cfg_folder")
    assert here.path == str(project) and here.system is None  # relative paths are made absolute
    assert here.ls() == sorted([*SENT, "ignored.log"])
    round_trip(here)


def test_folder_to_cluster_then_ls_sees_the_files(cluster, project, tmp_path):
    there = rh.folder(project).to(cluster)
    assert there.system is cluster and there.path != str(project)
    assert there.ls() == SENT  # .gitignore respected, sync bookkeeping hidden
    for again in round_trip(there):
        assert again.ls() == SENT  # the rebuilt folder lists the cluster's copy
    assert json.loads(json.dumps(there.config()))["system"]["name"] == cluster.name  # unsaved: whole config

    placed = rh.folder(project).to(cluster, path=str(tmp_path / "placed" / "here"))
    assert placed.path == str(tmp_path / "placed" / "here")
    assert placed.ls() == SENT
    assert (tmp_path / "placed" / "here" / "sub" / "b.txt").read_text() == "b"


def test_folder_on_a_saved_cluster_names_it(cluster, project):
    saved = rh.Cluster.from_config({**cluster.config(), "name": "cfg_folder_cluster"})
    saved.save()
    there = rh.folder(project).to(saved)
    assert there.config()["system"] == "~/cfg_folder_cluster"
    for again in round_trip(there):
        assert again.system.server_port == cluster.server_port and again.ls() == SENT


def test_folder_bad_paths_give_clear_errors(cluster, project, tmp_path):
    with pytest.raises(ConfigError, match="does not exist on this machine"):
        rh.folder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="home or the root directory"):
        rh.folder(Path.home()).to(cluster)
    with pytest.raises(ConfigError, match="home or the root directory"):
        rh.folder("/").to(cluster)
    with pytest.raises(ConfigError, match="not a directory"):
        rh.Folder(tmp_path / "gone").to(cluster)
    for dest, message in [
        ("relative/dir", "absolute or start with '~/'"),
        ("~", "absolute or start with '~/'"),
        ("/", "home or the root directory"),
        ("~/", "home or the root directory"),
        ("/tmp/../etc", "may not contain '..'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            rh.folder(project).to(cluster, path=dest)
    with pytest.raises(ConfigError, match="cannot list /no/such/folder-cfg"):
        rh.folder("/no/such/folder-cfg", system=cluster).ls()
    with pytest.raises(ConfigError, match="needs a cluster"):
        rh.folder(project).to("not-a-cluster")
    with pytest.raises(ConfigError, match=r"\.to\(\) sends folders from this machine"):
        rh.folder("/tmp", system=cluster).to(cluster)
    with pytest.raises(ConfigError, match="needs path="):
        rh.folder()
