"""The daemon's fast path for calls, seen from raw sockets: order, streaming, errors, closing.

Calls with the cluster token skip the ASGI stack (runhouse.server.fastpath); these tests pin down
that a client cannot tell, including the cases where it falls back to the normal path mid-connection.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import user_funcs as uf

import runhouse as rh
from runhouse.compute import local


@pytest.fixture(scope="module")
def daemon(cluster):
    rh.function(uf.add).to(cluster)
    rh.function(uf.tick).to(cluster)
    rh.function(uf.slow_items).to(cluster)
    token = local.read_token(cluster.settings, cluster.server_port)
    return cluster.server_port, token


def _call(port: int, token: str, path: str, data: object, extra: str = "") -> bytes:
    body = json.dumps({"data": data, "serialization": "none"}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _read_all(sock: socket.socket, until: bytes, count: int, timeout: float = 20) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while got.count(until) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _responses(blob: bytes) -> list[tuple[int, bytes]]:
    """Split concatenated Content-Length responses into (status, body)."""
    out = []
    while blob:
        head, _, rest = blob.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        out.append((status, rest[:length]))
        blob = rest[length:]
    return out


def test_pipelined_requests_are_answered_in_order(daemon, cluster):
    port, token = daemon
    before = cluster.status()["fast_calls"]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(4):  # the first may go the long way (the Host is learned), the rest go fast
            sock.sendall(_call(port, token, "/add/call", {"args": [1, 2], "kwargs": {}}))
            assert _responses(_read_all(sock, b"\r\n\r\n", 1))[0] == (200, b"3")
        assert cluster.status()["fast_calls"] >= before + 3
        # a slow call, a fast one, an admin route (the normal path) and a missing key, in one write
        batch = (
            _call(port, token, "/tick/call", {"args": [2, 0.2], "kwargs": {}})
            + _call(port, token, "/add/call", {"args": [2, 2], "kwargs": {}})
            + f"GET /keys HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            + _call(port, token, "/nope/call", {"args": [], "kwargs": {}})
        )
        sock.sendall(batch)
        blob = _read_all(sock, b"HTTP/1.1 ", 4)
        while len(_safe_split(blob)) < 4:
            blob += sock.recv(65536)
    replies = _responses(blob)
    assert [status for status, _ in replies] == [200, 200, 200, 404]
    assert replies[1][1] == b"4"
    assert "add" in json.loads(replies[2][1])["keys"]
    assert "nope" in json.loads(replies[3][1])["detail"]


def _safe_split(blob: bytes) -> list[tuple[int, bytes]]:
    try:
        replies = _responses(blob)
    except (StopIteration, ValueError, IndexError):
        return []
    return replies if all(len(b) > 0 for _, b in replies) else []


def test_output_streams_while_the_call_runs(daemon):
    port, token = daemon
    with socket.create_connection(("127.0.0.1", port)) as sock:
        body = json.dumps(
            {"data": {"args": [3, 0.5], "kwargs": {}}, "serialization": "json", "stream_logs": True}
        )
        request = (
            f"POST /tick/call HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        for _ in range(2):  # the second time the daemon knows the Host and takes the fast path
            start = time.monotonic()
            sock.sendall(request)
            first = _read_all(sock, b"stdout", 1)
            first_at = time.monotonic() - start
            rest = _read_all(sock, b"0\r\n\r\n", 1)
            assert b"transfer-encoding: chunked" in first.lower()
            assert first_at < 1.0, "printed output should arrive before the call ends (1.5 s)"
            assert time.monotonic() - start >= 1.4
            assert b"result" in rest


def test_connection_close_is_honoured_and_a_vanished_client_harms_nothing(daemon, cluster):
    port, token = daemon
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_call(port, token, "/add/call", {"args": [1, 1], "kwargs": {}}))
        _read_all(sock, b"\r\n\r\n", 1)
        sock.sendall(_call(port, token, "/add/call", {"args": [5, 5], "kwargs": {}}, "Connection: close\r\n"))
        blob = _read_all(sock, b"\r\n\r\n", 1)
        assert b"connection: close" in blob.lower() and blob.endswith(b"10")
        sock.settimeout(5)
        assert sock.recv(10) == b""  # the daemon closed its end
    with socket.create_connection(("127.0.0.1", port)) as sock:  # hang up in the middle of a slow call
        sock.sendall(_call(port, token, "/tick/call", {"args": [1, 0.3], "kwargs": {}}))
        _read_all(sock, b"\r\n\r\n", 1)
        sock.sendall(_call(port, token, "/tick/call", {"args": [1, 0.3], "kwargs": {}}))
    time.sleep(0.6)
    assert rh.function(name="add", system=cluster)(20, 22) == 42
    assert cluster.is_up()


def test_a_body_past_a_mebibyte_takes_the_fast_path_whole(daemon, cluster):
    """Large bodies are gathered in one buffer of their declared length on the fast path (no ASGI
    messages of 64 KB and no join): the call sees every byte, and a body in two writes with a
    pause between them (the buffer is filled across reads) arrives the same."""
    port, token = daemon
    text = "ab" * (3 << 20)  # 6 MiB of arguments
    request = _call(port, token, "/add/call", {"args": [text, "!"], "kwargs": {}})
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_call(port, token, "/add/call", {"args": [1, 2], "kwargs": {}}))  # learn the Host
        assert _responses(_read_all(sock, b"\r\n\r\n", 1))[0] == (200, b"3")
        before = cluster.status()["fast_calls"]
        middle = len(request) // 2
        sock.sendall(request[:middle])
        time.sleep(0.2)
        sock.sendall(request[middle:])
        head, _, rest = _read_all(sock, b"\r\n\r\n", 1).partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        sock.settimeout(20)
        while len(rest) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, "the daemon closed the connection mid-reply"
            rest += chunk
        assert head.split(b" ", 2)[1] == b"200"
        assert json.loads(rest[:length]) == text + "!"
    assert cluster.status()["fast_calls"] == before + 1  # it took the fast path


def test_large_bodies_back_to_back_never_overwrite_what_is_still_held(cluster):
    """Large bodies land in buffers used again once nothing refers to them (protocol/buffers.py),
    in the daemon and in the worker alike. Same-size arrays sent one after another, inline (under
    the shared-memory size): the worker keeps every one it got, and every result the client got
    is kept too; none of them changes when later calls reuse memory."""
    np = pytest.importorskip("numpy")
    keep = rh.function(uf.keep).to(cluster)
    echo = rh.function(uf.identity).to(cluster)
    n = (6 << 20) // 8  # 6 MiB: past the fast path's small-body size, below shared memory's
    sent, back = [], []
    for fill in range(1, 6):
        array = np.full(n, fill, dtype=np.int64)
        assert keep(array, "fastpath") == [k * n for k in range(1, fill + 1)]  # every kept argument intact
        back.append(echo(array))
        sent.append(fill)
    for fill, result in zip(sent, back, strict=True):
        assert result.shape == (n,) and int(result.min()) == int(result.max()) == fill

    from runhouse.protocol.buffers import POOL  # this process's: the client's

    before = POOL.reused
    for fill in range(6, 9):  # results dropped as they come: the client reuses their pages
        assert int(echo(np.full(n, fill, dtype=np.int64))[-1]) == fill
    assert POOL.reused >= before + 2


def test_a_request_pipelined_right_behind_a_large_body_is_answered_after_it(daemon, cluster):
    """The rest of a large body is read straight into its buffer and never past its end: a request
    sent in the same write right behind it is parsed as a request of its own, and answered second."""
    port, token = daemon
    text = "cd" * (2 << 20)  # 4 MiB
    first = _call(port, token, "/add/call", {"args": [text, "?"], "kwargs": {}})
    second = _call(port, token, "/add/call", {"args": [40, 2], "kwargs": {}})
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_call(port, token, "/add/call", {"args": [1, 2], "kwargs": {}}))  # learn the Host
        assert _responses(_read_all(sock, b"\r\n\r\n", 1))[0] == (200, b"3")
        before = cluster.status()["fast_calls"]
        sock.sendall(first + second)
        sock.settimeout(20)
        got = b""
        while True:
            replies = got.split(b"\r\n\r\n")
            if len(replies) >= 3 and replies[-1].endswith(b"42"):
                break
            chunk = sock.recv(1 << 20)
            assert chunk, "the daemon closed the connection"
            got += chunk
    answers = _responses(got)
    assert [status for status, _ in answers] == [200, 200]
    assert json.loads(answers[0][1]) == text + "?" and answers[1][1] == b"42"
    # the first took the fast path; the second, behind a call still in flight, may queue the long way
    assert cluster.status()["fast_calls"] in (before + 1, before + 2)


def test_a_client_gone_in_the_middle_of_a_large_body_harms_nothing(daemon, cluster):
    port, token = daemon
    request = _call(port, token, "/add/call", {"args": ["ef" * (3 << 20), "!"], "kwargs": {}})
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request[: len(request) // 2])
            time.sleep(0.1)
    assert rh.function(uf.add).to(cluster)(20, 22) == 42
    with socket.create_connection(("127.0.0.1", port)) as sock:  # and a whole one still goes through
        sock.sendall(request)
        sock.settimeout(20)
        got = b""
        while not got.endswith(b'!"'):
            chunk = sock.recv(1 << 20)
            assert chunk, "the daemon closed the connection"
            got += chunk
    assert _responses(got)[0][0] == 200
