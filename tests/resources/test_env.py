"""Envs with real package installs from the package index, venvs, setup commands and code sync."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import user_funcs as uf
from conftest import ASSETS, free_port

import runhouse as rh
from runhouse.exceptions import ConfigError, EnvSetupError
from runhouse.resources.sync import sync_folder
from runhouse.server.envs import conda_create_command, install_command

DEMO_PKG = ASSETS / "rh_demo_pkg"
pytestmark = pytest.mark.slow


def test_two_venv_envs_hold_conflicting_versions_at_once(cluster, capsys):
    old = rh.env(reqs=["six==1.15.0"], name="six_old", venv=True)
    new = rh.env(reqs=["six==1.16.0"], name="six_new", venv=True)
    old_version = rh.function(uf.module_version).to(cluster, env=old, name="six_version_old")
    new_version = rh.function(uf.module_version).to(cluster, env=new, name="six_version_new")
    assert "Installing six==1.15.0 into env 'six_old'" in capsys.readouterr().out  # progress reached us
    assert old_version("six") == "1.15.0"
    assert new_version("six") == "1.16.0"
    assert old_version("six") == "1.15.0"  # both live at the same time
    pids = {e["name"]: e["pid"] for e in cluster.envs()}
    assert pids["six_old"] != pids["six_new"]
    listed = {e["name"]: e for e in cluster.envs()}
    assert listed["six_old"]["reqs"] == ["six==1.15.0"] and "six_version_old" in listed["six_old"]["objects"]


def test_same_env_shares_one_worker(cluster):
    env = rh.env(env_vars={"SHARED": "1"}, name="shared_env")
    first = rh.function(uf.getpid).to(cluster, env=env, name="pid_a")
    second = rh.function(uf.getpid).to(cluster, env=env, name="pid_b")
    by_name = rh.function(uf.getpid).to(cluster, env="shared_env", name="pid_c")
    assert first() == second() == by_name()
    assert rh.function(uf.get_env).to(cluster, env="shared_env")("SHARED") == "1"


def test_local_package_and_requirements_file(cluster, tmp_path):
    (tmp_path / "requirements.txt").write_text(f"# pinned\nsix==1.15.0\n{DEMO_PKG}\n")
    env = rh.env(reqs=[f"-r {tmp_path / 'requirements.txt'}"], name="req_file_env", venv=True)
    version = rh.function(uf.module_version).to(cluster, env=env, name="req_file_version")
    assert version("six") == "1.15.0"
    assert version("rh_demo_pkg") == "0.3.0"
    prefix = rh.function(uf.python_prefix).to(cluster, env=env, name="req_file_prefix")()
    assert prefix.endswith("req_file_env")  # its own virtual environment


def test_failed_install_names_the_requirement_and_keeps_the_cluster(cluster):
    bad = rh.env(reqs=["rh-no-such-package-4a7c1e"], name="broken_env", venv=True)
    with pytest.raises(EnvSetupError, match="installing rh-no-such-package-4a7c1e failed") as info:
        rh.function(uf.add).to(cluster, env=bad, name="add_broken")
    assert "rh-no-such-package-4a7c1e" in str(info.value).split("failed", 1)[1]  # the installer's words
    assert rh.function(uf.add).to(cluster)(1, 2) == 3


def test_setup_commands_env_file_and_working_dir(cluster, tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "big.bin").write_bytes(b"x" * 1000)
    (project / "notes.txt").write_text("synced")
    (project / ".gitignore").write_text("data/\n")
    dotenv = tmp_path / "vars.env"
    dotenv.write_text("FROM_FILE=yes\nQUOTED='a b'\n")
    env = rh.env(
        env_vars=str(dotenv),
        setup_cmds=["echo made > made_by_setup.txt"],
        working_dir=str(project),
        name="setup_env",
    )
    cwd, files = rh.function(uf.cwd_and_files).to(cluster, env=env, name="setup_cwd")()
    assert "notes.txt" in files and "made_by_setup.txt" in files
    assert "data" not in files  # ignored by .gitignore
    assert cwd != str(project)  # the worker runs in the cluster's copy
    get_env = rh.function(uf.get_env).to(cluster, env="setup_env", name="setup_get_env")
    assert get_env("FROM_FILE") == "yes" and get_env("QUOTED") == "a b"


def test_setup_command_failure_is_reported(cluster):
    env = rh.env(setup_cmds=["echo about to fail; exit 7"], name="bad_setup")
    with pytest.raises(EnvSetupError, match=r"setup command .* failed \(exit code 7\)") as info:
        rh.function(uf.add).to(cluster, env=env, name="add_bad_setup")
    assert "about to fail" in str(info.value)


def test_sync_sends_only_what_changed(cluster, tmp_path):
    folder = tmp_path / "code"
    folder.mkdir()
    for i in range(20):
        (folder / f"m{i}.py").write_text(f"X = {i}\n")
    first = sync_folder(cluster.client, folder)
    assert first["written"] == 20
    again = sync_folder(cluster.client, folder)
    assert again["written"] == 0 and again["dest"] == first["dest"]
    time.sleep(0.01)
    (folder / "m3.py").write_text("X = 'changed'\n")
    (folder / "m4.py").unlink()
    third = sync_folder(cluster.client, folder)
    assert (third["written"], third["deleted"]) == (1, 1)
    dest = Path(third["dest"])
    assert (dest / "m3.py").read_text() == "X = 'changed'\n" and not (dest / "m4.py").exists()


def test_refuses_to_sync_home_or_root(cluster):
    with pytest.raises(ConfigError, match="home or the root directory"):
        cluster.sync(Path.home())
    with pytest.raises(ConfigError, match="home or the root directory"):
        cluster.sync("/")


def test_resending_to_an_existing_env_installs_nothing_again(cluster, capsys):
    env = rh.env(reqs=["six==1.15.0"], name="resend_env", venv=True)
    rh.function(uf.getpid).to(cluster, env=env, name="resend_pid")
    first_pid = rh.function(uf.getpid).to(cluster, env=env, name="resend_pid")()
    capsys.readouterr()
    again = rh.function(uf.getpid).to(cluster, env=env, name="resend_pid")
    assert again() == first_pid  # the same worker: not restarted
    assert "Installing" not in capsys.readouterr().out  # and nothing installed again


def test_default_env_reaches_daemon_and_every_worker(rh_home):
    default = rh.env(reqs=[str(DEMO_PKG)], env_vars={"RH_DEFAULT_FLAG": "from-default-env"})
    c = rh.cluster(name="with_default", host="localhost", server_port=free_port(), default_env=default)
    try:
        c.up()
        assert c.run(["echo $RH_DEFAULT_FLAG"])[0][1].strip() == "from-default-env"  # the daemon's env
        assert rh.function(uf.get_env).to(c)("RH_DEFAULT_FLAG") == "from-default-env"
        assert rh.function(uf.get_env).to(c, env=rh.env(name="other"), name="get_env_other")(
            "RH_DEFAULT_FLAG"
        ) == ("from-default-env")
        assert rh.function(uf.module_version).to(c)("rh_demo_pkg") == "0.3.0"
    finally:
        c.teardown()


def test_conda_without_conda_says_how_to_install(cluster):
    if shutil.which("conda") or shutil.which("micromamba") or shutil.which("mamba"):
        pytest.skip("conda is installed here; this test covers machines without it")
    env = rh.conda_env({"name": "rh_ml", "dependencies": ["python=3.11"]})
    with pytest.raises(EnvSetupError, match="need conda or micromamba.*install micromamba"):
        rh.function(uf.add).to(cluster, env=env, name="add_conda")
    assert rh.function(uf.add).to(cluster)(2, 3) == 5


def test_install_and_conda_commands():
    assert install_command("/env/bin/python", ["six"], "/usr/bin/uv") == [
        "/usr/bin/uv",
        "pip",
        "install",
        "--python",
        "/env/bin/python",
        "six",
    ]
    assert install_command("/env/bin/python", ["six"], None)[1:5] == [
        "-m",
        "pip",
        "--python",
        "/env/bin/python",
    ]
    assert conda_create_command("/opt/conda/bin/conda", "ml", None, "/tmp/ml.yml") == [
        "/opt/conda/bin/conda",
        "env",
        "create",
        "-y",
        "-n",
        "ml",
        "-f",
        "/tmp/ml.yml",
    ]
    assert conda_create_command(
        "/bin/micromamba", "ml", {"dependencies": ["python=3.11", "numpy"]}, None
    ) == ["/bin/micromamba", "create", "-y", "-n", "ml", "python=3.11", "numpy"]


def test_env_arguments_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        rh.env(env_vars=str(tmp_path / "missing.env"))
    with pytest.raises(ConfigError, match="requirements file"):
        rh.env(reqs=["-r nowhere.txt"])
    with pytest.raises(ConfigError, match="not a directory"):
        rh.env(reqs=["./no_such_folder"])
    with pytest.raises(ConfigError, match="venv=True needs the env to have a name"):
        rh.env(reqs=["six"], venv=True)


def test_compute_is_checked_and_round_trips():
    for bad, message in (
        ({"GPU": -1}, "at least 0"),
        ({"CPU": "2"}, "must be a number"),
        ({"node_idx": 1.5}, "index of a host"),
        ({"GPU": True}, "must be a number"),
    ):
        with pytest.raises(ConfigError, match=message):
            rh.env(name="placed", compute=bad)
    with pytest.raises(ConfigError, match="must map resource names"):
        rh.env(name="placed", compute=["GPU"])  # type: ignore[arg-type]
    env = rh.env(name="placed", compute={"CPU": 2, "node_idx": 1, "tpu": 1})
    assert rh.Resource.from_config(env.config()).compute == {"CPU": 2, "node_idx": 1, "tpu": 1}
    assert rh.env(name="unplaced", compute={}).config()["compute"] == {}
    with pytest.raises(ConfigError, match="give the env a name"):
        rh.env(compute={"GPU": 1})  # unnamed is the default env, which stays on the head


def test_compute_on_a_one_machine_cluster_is_refused_at_to(cluster):
    # nothing could place the worker: refused, never accepted and ignored
    placed = rh.env(name="placed_here", compute={"CPU": 1})
    with pytest.raises(rh.BadRequest, match=r"compute=\{'CPU': 1\} places .*multi-node cluster"):
        placed.to(cluster)
    assert "placed_here" not in [e["name"] for e in cluster.client.envs()]


def test_env_config_round_trip(tmp_path):
    env = rh.env(
        reqs=["six==1.16.0", "conda:numpy"],
        env_vars={"A": "1"},
        setup_cmds=["true"],
        name="cfg",
        venv=True,
    )
    again = rh.Resource.from_config(env.config())
    assert isinstance(again, rh.Env) and again.config() == env.config()
    conda = rh.conda_env({"name": "ml", "dependencies": ["python=3.11"]}, reqs=["six"])
    assert rh.Resource.from_config(conda.config()).config() == conda.config()


def test_env_worker_is_deleted_and_memory_freed(cluster):
    import psutil

    env = rh.env(env_vars={"K": "v"}, name="freed_env")
    cluster.put("ballast", bytearray(80 * 2**20), env=env)
    pid = next(e["pid"] for e in cluster.envs() if e["name"] == "freed_env")
    before = psutil.virtual_memory().available
    rss = psutil.Process(pid).memory_info().rss
    assert rss > 80 * 2**20
    cluster.delete("freed_env")
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert psutil.virtual_memory().available > before + 50 * 2**20 or not psutil.pid_exists(pid)
    assert rh.function(uf.get_env).to(cluster, env=env, name="freed_again")("K") == "v"  # recreated on use
    assert os.getpid() != next(e["pid"] for e in cluster.envs() if e["name"] == "freed_env")
