"""Configs, the local store, secrets and loading resources by name."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap

import pytest
import user_funcs as uf

import runhouse as rh
from runhouse.exceptions import ConfigError, ObjectNotFound
from runhouse.resources.store import LocalStore


def test_config_round_trips(cluster, tmp_path):
    lab = rh.cluster(
        name="lab",
        host=["10.1.2.3"],
        ssh_creds={"ssh_user": "me", "password": "pw"},
        server_connection_type="tls",
        autostop_mins=5,
    )
    assert "pw" not in json.dumps(lab.config())  # a password never reaches a config
    env = rh.env(reqs=["six"], env_vars={"A": "1"}, name="e1", venv=True)
    fn = rh.function(uf.add).to(cluster, name="cfg_add")
    counter = rh.module(uf.Counter).to(cluster)(start=1, name="cfg_counter")
    token = rh.secret(name="s", values={"token": "t0p"}, provider="huggingface")
    for resource in (lab, env, fn, counter, token):
        config = resource.config()
        again = rh.Resource.from_config(json.loads(json.dumps(config)))
        assert type(again) is type(resource)
        if resource is not token:
            assert again.config() == config
    assert rh.Resource.from_config(token.config()).values == {}  # not saved: no values to be had
    assert "t0p" not in json.dumps(rh.secret(name="s", values={"token": "t0p"}).config())
    assert rh.Resource.from_config(fn.config())(2, 2) == 4  # a rebuilt stub calls the live function


def test_save_and_load_by_name_in_another_process(cluster, tmp_path):
    rh.function(uf.add).to(cluster, name="saved_add").save()
    assert rh.exists("saved_add") and rh.exists("~/saved_add")
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent("""
        import runhouse as rh
        print(rh.function(name="~/saved_add")(40, 2))
    """)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    rh.function(name="saved_add").delete_configs()
    assert not rh.exists("saved_add")
    with pytest.raises(ObjectNotFound, match="no saved resource named 'saved_add'"):
        rh.function(name="saved_add")


def test_cluster_and_module_saved_by_name(cluster):
    cluster.save()
    again = rh.cluster(name=cluster.name)
    assert again.server_port == cluster.server_port and again.is_up()
    rh.module(uf.Counter).to(cluster)(start=7, name="saved_counter").save()
    assert rh.module(name="saved_counter").incr() == 8


def test_bad_names_are_refused_and_nothing_is_lost(cluster):
    rh.function(uf.add).to(cluster, name="keep_me").save()
    for bad in ("../escape", "a/b", "", "x" * 200):
        with pytest.raises(ConfigError, match="invalid resource name"):
            rh.function(uf.add).save(name=bad)
    with pytest.raises(ConfigError, match="Den"):
        rh.function(name="/alice/np_sum")
    assert rh.function(name="keep_me")(1, 1) == 2


def _save_many(args):
    home, worker = args
    import os

    os.environ["RH_HOME"] = home
    import runhouse as rh

    for i in range(30):
        rh.env(env_vars={"WRITER": str(worker), "I": str(i)}, name="contended").save()


def test_concurrent_saves_leave_one_whole_record(rh_home):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_save_many, [(str(rh_home), w) for w in range(4)])
    record = LocalStore().load("contended")  # valid JSON, one writer's whole record
    assert record["env_vars"]["WRITER"] in {"0", "1", "2", "3"} and record["env_vars"]["I"] == "29"
    assert not list((rh_home / "resources").glob(".tmp-*"))


def test_secrets_are_private_and_values_stay_out_of_configs(rh_home, tmp_path):
    key = tmp_path / "id_test"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    saved = rh.provider_secret("ssh", values={"ssh_user": "me"}, path=str(key), name="my-ssh").save()
    path = rh_home / "secrets" / "my-ssh.json"
    assert path.stat().st_mode & 0o077 == 0
    assert "BEGIN OPENSSH" not in json.dumps(saved.config())
    loaded = rh.secret(name="my-ssh")
    assert loaded.provider == "ssh" and loaded.values["private_key"].startswith("-----BEGIN")
    hf = rh.provider_secret("huggingface", values={"token": "hf_x"})
    assert hf.env_vars() == {"HF_TOKEN": "hf_x"}
    with pytest.raises(ConfigError, match="unknown provider"):
        rh.provider_secret("nope")
    cluster = rh.cluster(name="via-secret", host=["10.9.9.9"], ssh_creds="my-ssh")
    assert cluster.config()["ssh_creds"] == "my-ssh"  # the config names the secret, not the key
    assert (rh_home / "keys" / "my-ssh").stat().st_mode & 0o077 == 0
