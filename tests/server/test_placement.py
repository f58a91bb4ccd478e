"""The pieces of multi-node placement that need no Ray, in-process: the worker listener admits only
a connection that sends its worker's id and secret (and reads nothing else), and a call's
shared-memory arguments are made inline for a worker on another node. The whole path, with Ray on
three hosts, is tests/compute/test_ray_placement.py."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct

import pytest
from placed_funcs import Blob

from runhouse.exceptions import BadRequest
from runhouse.protocol.ipc import MAGIC, PREAMBLE
from runhouse.protocol.serialization import deserialize, serialize_parts
from runhouse.protocol.shm import shm_dir
from runhouse.server.nodeworker import parse_nvidia_smi
from runhouse.server.placement import WorkerListener, check_compute, inline_segments, to_segments


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


async def _send(address: tuple[str, int], data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(100), 10)
    except ConnectionResetError:  # closed with our bytes unread: a reset, not a FIN
        return b""
    finally:
        writer.close()


def test_the_listener_admits_a_worker_by_its_secret_and_closes_everything_else(tmp_path):
    marker = tmp_path / "unpickled"
    header = pickle.dumps(_Touch(str(marker)), protocol=5)

    async def scenario() -> None:
        listener = WorkerListener("127.0.0.1")
        await listener.open()
        address = ("127.0.0.1", listener.port)
        wid, secret, accepted = listener.expect()
        wrong = bytes(b ^ 1 for b in secret)
        for data in (
            struct.pack(">IQ", len(header), 0) + header,  # a channel frame: never unpickled
            PREAMBLE.pack(MAGIC, wid, wrong),  # the right id, a wrong secret
            PREAMBLE.pack(b"XXXX", wid, secret),  # the right secrets, a wrong magic
        ):
            assert await _send(address, data) == b""  # closed by the listener
        assert not accepted.done() and listener.refused == 3

        reader, writer = await asyncio.open_connection(*address)
        writer.write(PREAMBLE.pack(MAGIC, wid, secret))
        await writer.drain()
        sock = await asyncio.wait_for(accepted, 10)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        sock.close()
        writer.close()
        # a secret is good for one connection only
        assert await _send(address, PREAMBLE.pack(MAGIC, wid, secret)) == b""
        listener.close()

    asyncio.run(scenario())
    assert not marker.exists()


def test_shared_memory_arguments_are_made_inline():
    folder = shm_dir()
    if folder is None:
        pytest.skip("no /dev/shm here")
    value = {"big": Blob(os.urandom(9 << 20)), "small": Blob(os.urandom(2 << 20)), "n": 3}
    parts = serialize_parts(value, "pickle", folder)
    payload = b"".join(bytes(p) for p in parts)
    with pytest.raises(Exception, match="shared memory"):
        deserialize(payload, "pickle", None)  # what a worker on another node would see
    inline = inline_segments(payload, folder)
    assert deserialize(b"".join(bytes(p) for p in inline), "pickle", None) == value
    plain = b"".join(bytes(p) for p in serialize_parts(value, "pickle", None))
    assert inline_segments(plain, folder) is plain  # nothing in shared memory: passed as it is

    # a reply from a worker on another node, for a client on the head: big buffers into shared memory
    reply = to_segments(bytearray(plain), folder)
    assert len(reply) < 3 << 20  # the 9 MB buffer left the body; the 2 MB one stayed
    with pytest.raises(Exception, match="shared memory"):
        deserialize(reply, "pickle", None)
    assert deserialize(reply, "pickle", folder) == value


def test_compute_from_a_client_is_checked():
    assert check_compute({"CPU": 2, "node_idx": 1}) == {"CPU": 2, "node_idx": 1}
    for bad in ({"GPU": -1}, {"node_idx": 1.5}, {"CPU": "2"}, ["GPU"], {"GPU": True}):
        with pytest.raises(BadRequest):
            check_compute(bad)


def test_nvidia_smi_rows_become_gpus():
    text = "0, NVIDIA H200, 143771, 1, 0\n1, NVIDIA A10G, 23028, [N/A], 37\n"
    assert parse_nvidia_smi(text) == [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "memory_total_mb": 143771.0,
            "memory_used_mb": 1.0,
            "utilization_percent": 0.0,
        },
        {
            "index": 1,
            "name": "NVIDIA A10G",
            "memory_total_mb": 23028.0,
            "memory_used_mb": None,
            "utilization_percent": 37.0,
        },
    ]
    assert parse_nvidia_smi("") == []


def test_of_two_entries_for_one_address_the_one_whose_raylet_answers_is_chosen():
    """A node that died and joined again is listed twice by Ray (both alive) until its health checks
    catch up; placing on the dead entry would have the actor cancelled when they do."""
    from runhouse.server.placement import _answering

    with socket.socket() as live, socket.socket() as gone:
        live.bind(("127.0.0.1", 0))
        live.listen()
        gone.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        new = {"NodeID": "new", "NodeManagerAddress": "127.0.0.1", "NodeManagerPort": live.getsockname()[1]}
        old = {"NodeID": "old", "NodeManagerAddress": "127.0.0.1", "NodeManagerPort": gone.getsockname()[1]}
        assert _answering([new, old])["NodeID"] == "new"
        assert _answering([old, new])["NodeID"] == "new"
        assert _answering([old])["NodeID"] == "old"  # the only one: no probe
