"""Issue 11, point 8: functions as the original's (0.0.35 era): map, starmap, endpoint, http_url,
get_or_call, get_or_to."""

from __future__ import annotations

import json

import httpx
import pytest
import user_funcs as uf

import runhouse as rh
from runhouse.compute import local
from runhouse.exceptions import ConfigError


def test_map_and_starmap_return_results_in_order(cluster):
    remote_add = rh.function(uf.add).to(cluster)
    assert remote_add.map([1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    assert remote_add.map(["a", "b"], b="!") == ["a!", "b!"]
    assert remote_add.starmap([(1, 1), (2, 2), (5, 5)]) == [2, 4, 10]
    assert remote_add.starmap([]) == []
    assert rh.function(uf.async_add).to(cluster).map([1, 2], [3, 4]) == [4, 6]
    assert rh.function(uf.slow_items).to(cluster).map([2, 1], interval=0) == [[0, 1], [0]]


def test_map_runs_the_calls_concurrently(cluster):
    meet = rh.function(uf.meet).to(cluster, env=rh.env(name="map_env"))
    # each call waits until 6 calls are inside the function at once: only concurrent calls meet
    assert meet.map([6] * 6, timeout=20) == [True] * 6


def test_a_failed_item_is_named(cluster):
    remote = rh.function(uf.fail_on).to(cluster)
    with pytest.raises(ValueError, match="bad item 3") as info:
        remote.map([1, 2, 3, 4], [3, 3, 3, 3])
    assert any("map item 2 of 4 failed: fail_on(3, 3)" in note for note in info.value.__notes__)
    with pytest.raises(ConfigError, match="run_name"):
        remote.map([1], [2], run_name="one")


def test_endpoint_and_http_url_reach_the_function(cluster):
    remote_add = rh.function(uf.add).to(cluster)
    assert remote_add.endpoint() == f"{cluster.client.endpoint.url}/add"
    url = remote_add.http_url()
    assert url == f"{remote_add.endpoint()}/call"
    token = local.read_token(cluster.settings, cluster.server_port)
    reply = httpx.post(
        url,
        json={"data": {"args": [2, 3], "kwargs": {}}, "serialization": "json"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]  # JSON text in the original's envelope
    assert (json.loads(data) if isinstance(data, str) else data) == 5
    curl = remote_add.http_url(True, 2, 3)
    assert curl.startswith(f"curl -X POST {url} ") and '"args": [2, 3]' in curl


def test_get_or_call_runs_once_per_run_name(cluster):
    remote_add = rh.function(uf.add).to(cluster)
    assert remote_add.get_or_call("orig_run_1", True, True, 5, 6) == 11
    assert remote_add.get_or_call("orig_run_1", True, True, 100, 100) == 11  # the stored result
    assert remote_add.get_or_call("orig_run_1", False, True, 1, 2) == 3  # load=False runs again
    handle = remote_add.get_or_call("orig_run_2", True, False, 1, 1)
    assert isinstance(handle, rh.RemoteResult) and handle.fetch() == 2


def test_get_or_to_reuses_a_deployed_function(cluster):
    first = rh.function(uf.identity).get_or_to(cluster, name="orig_identity")
    assert first("x") == "x"
    again = rh.function(uf.add).get_or_to(cluster, name="orig_identity")
    assert again("y") == "y"  # the function already there, not add
