"""The sync transport against a real daemon: keep-alive reuse and recovery, clear errors."""

from __future__ import annotations

import pytest
import user_funcs as uf
from conftest import free_port

import runhouse as rh
from runhouse.client.transport import Endpoint, SyncTransport
from runhouse.exceptions import ConnectionError_


def test_unreachable_daemon_is_a_clear_error():
    transport = SyncTransport(Endpoint("127.0.0.1", free_port()), timeout=2)
    with (
        pytest.raises(ConnectionError_, match="cannot reach the runhouse daemon"),
        transport.open("GET", "/check"),
    ):
        pass


def test_connection_is_reused_and_recovers_after_daemon_restart(own_cluster):
    add = rh.function(uf.add).to(own_cluster)
    assert add(1, 2) == 3
    conn = own_cluster.client._sync._local.conn
    assert add(2, 3) == 5
    assert own_cluster.client._sync._local.conn is conn  # keep-alive: same connection
    own_cluster.restart_server()  # the old connection is now dead
    assert rh.function(uf.add).to(own_cluster)(3, 4) == 7
