"""Clusters and resources as the original's users wrote them: ``rh.here`` inside a cluster, the
address properties, the original's ``status()`` fields, condensed configs and saved names."""

from __future__ import annotations

import pytest

import runhouse as rh
from runhouse.exceptions import ConfigError


def where_am_i() -> dict:
    import runhouse as rh

    here = rh.here
    return {
        "name": here.name,
        "port": here.server_port,
        "on_this_cluster": here.on_this_cluster(),
        "default_env": type(here.default_env).__name__,
        "keys": here.keys(),  # a call back into its own daemon, with the token from its folder
    }


def test_rh_here_inside_a_worker_is_that_cluster(cluster):
    fn = rh.function(where_am_i).to(cluster, name="orig_where")
    inside = fn()
    assert inside["name"] == cluster.name and inside["port"] == cluster.server_port
    assert inside["on_this_cluster"] is True and inside["default_env"] == "Env"
    assert "orig_where" in inside["keys"]
    shell = cluster.run(["python -c 'import runhouse as rh; print(rh.here.name, rh.here.server_port)'"])
    assert shell[0][1].split() == [cluster.name, str(cluster.server_port)]
    assert cluster.on_this_cluster() is False  # this test process is not on it
    assert rh.here.name == "here"


def test_address_properties_of_a_local_cluster(cluster):
    port = cluster.server_port
    assert cluster.address == "localhost" and cluster.ips == ["localhost"]
    assert cluster.server_address == "localhost" and cluster.server_host == "127.0.0.1"
    assert cluster.client_port == port and cluster.creds_values == {}
    assert cluster.endpoint() == f"http://127.0.0.1:{port}"
    assert cluster.endpoint(external=True) == f"http://localhost:{port}"


def test_address_properties_of_an_ssh_cluster_need_no_connection():
    c = rh.cluster(name="orig_remote", host="10.9.8.7", ssh_creds={"ssh_user": "me", "password": "pw"})
    assert c.address == "10.9.8.7" and c.server_address == "localhost" and c.server_host == "127.0.0.1"
    assert c.creds_values["ssh_user"] == "me" and c.creds_values["password"] == "pw"
    assert c.client_port is None and c.endpoint(external=True) is None  # reached through a tunnel only
    by_ips = rh.cluster(name="orig_ips", ips=["10.9.8.7"], ssh_creds={"ssh_user": "me"}, dryrun=True)
    assert by_ips.ips == ["10.9.8.7"] and by_ips.server_host == "127.0.0.1"
    with pytest.raises(ConfigError, match="server_host"):
        rh.cluster(name="orig_bind", ips=["10.9.8.7"], ssh_creds={"ssh_user": "me"}, server_host="0.0.0.0")
    tls = rh.cluster(
        name="orig_tls", host="10.9.8.7", server_connection_type="tls", ssh_creds={"ssh_user": "me"}
    )
    assert (
        tls.server_host == "0.0.0.0" and tls.endpoint(external=True) == f"https://10.9.8.7:{tls.server_port}"
    )


def test_status_carries_the_original_fields(cluster):
    rh.function(where_am_i).to(cluster, name="orig_status_probe")
    status = cluster.status()
    assert status["cluster_config"]["name"] == cluster.name
    assert status["cluster_config"]["server_port"] == cluster.server_port
    assert "ssh_creds" not in status["cluster_config"]
    assert status["runhouse_version"] == rh.__version__ and status["server_pid"] == status["pid"]
    default = status["env_servlet_processes"]["default_env"]
    assert default["pid"] and default["env_memory_usage"]["used"] > 0
    assert "cpu_percent" in default["env_cpu_usage"] and "orig_status_probe" in default["objects"]
    assert status["workers"]  # our own fields stay


def test_default_env_is_always_an_env():
    bare = rh.cluster(name="orig_bare", host="localhost", server_port=1)
    assert isinstance(bare.default_env, rh.Env) and bare.default_env.name == "default_env"
    assert bare.config()["default_env"] is None  # the built-in one is not written out
    assert rh.Cluster.from_config(bare.config()).config() == bare.config()


def test_condensed_configs_name_saved_resources():
    env = rh.env(name="orig_saved_env", env_vars={"A": "1"}).save("~/orig_saved_env")
    c = rh.cluster(name="orig_condensed", host="localhost", server_port=2, default_env=env)
    full, condensed = c.config(), c.config(condensed=True)
    assert full["default_env"]["env_vars"] == {"A": "1"}
    assert condensed["default_env"] == "~/orig_saved_env"
    assert condensed["resource_subtype"] == "Cluster" and c.resource_subtype == "Cluster"
    again = rh.Cluster.from_config(condensed)
    assert again.default_env.env_vars == {"A": "1"}  # loaded from where it is saved
    unsaved = rh.cluster(
        name="orig_unsaved", host="localhost", server_port=3, default_env=rh.env(env_vars={"B": "2"})
    )
    assert unsaved.config(condensed=True)["default_env"]["env_vars"] == {"B": "2"}


def test_saved_names_and_original_constructor_arguments():
    local = rh.Resource(name="~/orig_x")
    assert local.name == "orig_x" and local.rns_address == "~/orig_x"
    den = rh.Resource(name="/alice/orig_y")
    assert den.name == "orig_y" and den.rns_address == "/alice/orig_y"
    mine = rh.env(name="@/orig_mine", env_vars={"M": "1"})  # not logged in: the local store is yours
    assert mine.name == "orig_mine" and mine.rns_address == "~/orig_mine"
    mine.save()
    assert rh.exists("~/orig_mine") and rh.env(name="@/orig_mine").env_vars == {"M": "1"}
    assert rh.Resource("orig_z", dryrun=True, visibility="private").visibility == "private"
    with pytest.raises(ConfigError, match="visibility"):
        rh.Resource("orig_z", visibility="everyone")
    with pytest.raises(ConfigError, match="provenance"):
        rh.Resource("orig_z", provenance={"run": 1})
    assert rh.env(name="orig_sys", system=None).system is None
