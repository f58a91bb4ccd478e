"""The HTTP/1.1 client connection against a tiny real server that answers in one packet."""

from __future__ import annotations

import socket
import threading

from runhouse.client.http11 import Connection


def _serve(listener: socket.socket, replies: list[bytes]) -> None:
    conn, _ = listener.accept()
    with conn:
        for reply in replies:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(reply)  # headers and body in one write


def test_keep_alive_survives_replies_that_arrive_whole():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        replies = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ]
        server = threading.Thread(target=_serve, args=(listener, replies))
        server.start()
        conn = Connection("127.0.0.1", listener.getsockname()[1], timeout=5)
        conn.send("GET", "/a", {}, None)
        reply, body = conn.receive()
        assert (reply.status, b"".join(body)) == (200, b"ok")
        assert not conn.closed  # kept alive for the next request
        conn.send("GET", "/b", {}, None)
        reply, body = conn.receive()
        assert (reply.status, b"".join(body)) == (404, b"abc")
        conn.close()
        server.join()


def test_connection_close_header_closes():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = threading.Thread(
            target=_serve,
            args=(listener, [b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"]),
        )
        server.start()
        conn = Connection("127.0.0.1", listener.getsockname()[1], timeout=5)
        conn.send("GET", "/", {}, None)
        _, body = conn.receive()
        assert b"".join(body) == b"x" and conn.closed
        server.join()
