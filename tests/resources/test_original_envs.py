"""Envs written as for the original (the ``rh.env`` era): ``env.to``, ``env.run``, envs changed after
construction, conda factories, ``env=`` as a list or dict, envs among a cluster's keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import user_funcs as uf
from conftest import ASSETS

import runhouse as rh
from runhouse.exceptions import ConfigError

DEMO_PKG = ASSETS / "rh_demo_pkg"
pytestmark = pytest.mark.slow


def test_env_to_sets_up_and_force_install_sets_up_again(cluster, tmp_path):
    counter = tmp_path / "setup_runs"
    env = rh.env(name="orig_setup", setup_cmds=[f"echo run >> {counter}"], env_vars={"ORIG_K": "v1"})
    bound = env.to(cluster)
    assert isinstance(bound, rh.Env) and bound.system is cluster and bound.name == "orig_setup"
    assert counter.read_text().splitlines() == ["run"]
    env.to(cluster)  # unchanged: nothing is set up again
    assert counter.read_text().splitlines() == ["run"]
    env.to(cluster, force_install=True)
    assert counter.read_text().splitlines() == ["run", "run"]
    assert bound.run(["echo $ORIG_K"]) == [(0, "v1\n", "")]
    with pytest.raises(ConfigError, match="path"):
        env.to(cluster, path="/tmp/elsewhere")


def test_cluster_run_in_an_env_has_its_vars_python_and_working_dir(cluster, tmp_path):
    project = tmp_path / "orig_project"
    project.mkdir()
    (project / "marker.txt").write_text("in the working dir\n")
    env = rh.env(name="orig_run_env", env_vars={"ORIG_RUN": "yes"}, working_dir=str(project), venv=True)
    results = cluster.run(
        ["echo $ORIG_RUN", "cat marker.txt", "python -c 'import sys; print(sys.prefix)'"], env=env
    )
    assert [r[0] for r in results] == [0, 0, 0]
    assert results[0][1] == "yes\n" and results[1][1] == "in the working dir\n"
    assert results[2][1].strip().endswith("orig_run_env")  # the env's own venv is first on PATH
    # by name, once it exists; and the daemon's own context without env
    assert cluster.run(["echo $ORIG_RUN"], env="orig_run_env")[0][1] == "yes\n"
    assert cluster.run(["echo ${ORIG_RUN:-unset}"])[0][1] == "unset\n"
    assert cluster.run(["exit 3"], require_outputs=False) == [3]
    with pytest.raises(rh.RunhouseError, match="no env named"):
        cluster.run(["true"], env="orig_no_such_env")


def test_an_env_changed_after_construction_installs_what_it_is_now(cluster, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("ORIG_FROM_FILE=file-value\n")
    project = tmp_path / "orig_wd"
    project.mkdir()
    (project / "data.txt").write_text("wd\n")
    env = rh.env(name="orig_changed", venv=True)
    env.reqs += ["six==1.16.0"]
    env.env_vars = str(dotenv)
    env.working_dir = str(project)
    assert env.reqs == ["six==1.16.0", str(project)]  # the working dir is listed with the reqs
    fn = rh.function(uf.module_version).to(cluster, env=env, name="orig_changed_version")
    assert fn("six") == "1.16.0"
    out = cluster.run(["echo $ORIG_FROM_FILE", "cat data.txt"], env="orig_changed")
    assert [r[1] for r in out] == ["file-value\n", "wd\n"]
    dotenv.write_text("ORIG_FROM_FILE=changed\n")  # the file is read again at the next .to()
    env.to(cluster)
    assert cluster.run(["echo $ORIG_FROM_FILE"], env="orig_changed")[0][1] == "changed\n"


def test_conda_env_factories_and_conda_yaml(tmp_path):
    named = rh.conda_env(name="orig_conda", reqs=["six"])
    assert isinstance(named, rh.CondaEnv) and named.conda_yaml is not None
    assert named.conda_yaml["name"] == "orig_conda" and named.reqs == ["six"]
    spec = {"name": "orig_spec", "dependencies": ["python=3.11"]}
    from_spec = rh.env(conda_env=spec, reqs=["pip:six"])
    assert (
        isinstance(from_spec, rh.CondaEnv) and from_spec.conda_yaml == spec and from_spec.name == "orig_spec"
    )
    existing = rh.env(conda_env="orig_existing")
    assert isinstance(existing, rh.CondaEnv) and existing.conda_yaml is None
    assert existing.config()["resource_subtype"] == "CondaEnv"
    with pytest.raises(ConfigError, match="name"):
        rh.conda_env()


def test_env_given_as_a_list_or_a_dict(cluster):
    listed = rh.function(uf.module_version).to(cluster, env=[str(DEMO_PKG)], name="orig_list_env")
    assert listed("rh_demo_pkg") == "0.3.0"
    as_dict = {"name": "orig_dict_env", "reqs": ["six==1.15.0"], "venv": True}
    in_dict = rh.function(uf.module_version).to(cluster, env=as_dict, name="orig_dict_version")
    assert in_dict("six") == "1.15.0"
    with pytest.raises(ConfigError, match="env must be"):
        rh.function(uf.add).to(cluster, env=42)


def test_an_env_given_to_the_factory_is_kept_until_to(cluster, capsys):
    fn = rh.function(uf.module_version, env=rh.env(reqs=["six==1.16.0"], name="orig_kept", venv=True))
    assert fn.env is not None and fn.env.env_name == "orig_kept"  # kept, not dropped
    remote = fn.to(cluster, name="orig_kept_version")
    assert remote("six") == "1.16.0"
    capsys.readouterr()
    again = fn.to(cluster, name="orig_kept_version", force_install=True)  # installs again on request
    assert "Installing six==1.16.0" in capsys.readouterr().out
    assert again("six") == "1.16.0"
    listed = rh.function(uf.module_version, env=[str(DEMO_PKG)]).to(cluster, name="orig_kept_list")
    assert listed("rh_demo_pkg") == "0.3.0"


def test_envs_are_keys_and_get_returns_the_env(cluster):
    env = rh.env(name="orig_keyed", env_vars={"ORIG_KEYED": "1"})
    env.to(cluster)
    assert "orig_keyed" in cluster.keys() and "default_env" not in cluster.keys()
    got = cluster.get("orig_keyed")
    assert isinstance(got, rh.Env) and got.env_vars == {"ORIG_KEYED": "1"} and got.system is cluster
    assert got.run(["echo $ORIG_KEYED"])[0][1] == "1\n"
    assert cluster.put_resource(rh.env(name="orig_put", env_vars={"P": "2"})) == "orig_put"
    assert cluster.get("orig_put").env_vars == {"P": "2"}
    assert cluster.put_resource(rh.Resource(name="orig_plain")) == "orig_plain"
    again = cluster.get("orig_plain")
    assert isinstance(again, rh.Resource) and again.name == "orig_plain"
    cluster.delete(["orig_keyed", "orig_put", "orig_plain"])
    assert not {"orig_keyed", "orig_put", "orig_plain"} & set(cluster.keys())


def test_bad_entries_fail_when_set_not_at_to(tmp_path: Path):
    env = rh.env(name="orig_bad")
    with pytest.raises(ConfigError, match="does not exist"):
        env.env_vars = str(tmp_path / "missing.env")
    with pytest.raises(ConfigError, match="not a directory"):
        env.reqs = ["./orig_no_such_folder"]
