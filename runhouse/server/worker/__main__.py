"""Worker process entry point: ``python -m runhouse.server.worker --fd N --name ENV``.

Started by the daemon with one end of a socketpair as file descriptor ``N``; serves messages on
it until the daemon closes it, then exits. On another node of a multi-node cluster it is started
by a Ray actor (:mod:`runhouse.server.nodeworker`) with ``--connect HOST:PORT`` instead: it
connects to the daemon's worker listener over TCP and sends its id and secret (hex in
``RH_WORKER_ID`` / ``RH_WORKER_SECRET``, removed from its environment before any user code runs)
as raw bytes, then speaks the same channel. Records of :mod:`runhouse.protocol.messages` cross the
channel as plain tuples: decoded here on the way in, encoded on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import Any

from runhouse.protocol.ipc import MAGIC, PREAMBLE, open_channel, tune_tcp
from runhouse.protocol.messages import Hello, ProtocolError, WorkerReply, decode_request
from runhouse.server.loop import run_loop
from runhouse.server.worker import capture
from runhouse.server.worker.runtime import WorkerRuntime


def connect(address: str) -> socket.socket:
    """A TCP connection to the daemon's worker listener at ``host:port``, introduced by our id and
    secret (taken out of the environment so user code never sees them)."""
    host, _, port = address.rpartition(":")
    wid = bytes.fromhex(os.environ.pop("RH_WORKER_ID"))
    secret = bytes.fromhex(os.environ.pop("RH_WORKER_SECRET"))
    sock = socket.create_connection((host, int(port)), timeout=30)
    tune_tcp(sock)
    sock.sendall(PREAMBLE.pack(MAGIC, wid, secret))
    sock.setblocking(False)
    return sock


async def serve(sock: socket.socket, name: str, threads: int) -> None:
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    runtime: WorkerRuntime | None = None

    def on_message(header: Any, body: Any) -> None:
        assert runtime is not None
        try:
            msg = decode_request(header)
        except ProtocolError as e:
            runtime.refuse(header, e)
            return
        runtime.on_message(msg, body)

    def on_close(exc: Exception | None) -> None:
        if not closed.done():
            closed.set_result(None)

    channel = await open_channel(sock, on_message, on_close)
    send = channel.send

    def send_record(msg: WorkerReply, body: Any) -> None:
        send(tuple(msg), body)  # messages.encode, inlined: the call path

    runtime = WorkerRuntime(name, send_record, loop, threads)
    send_record(Hello(0, os.getpid()), None)
    loop.add_signal_handler(signal.SIGTERM, on_close, None)
    await closed
    runtime.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="runhouse-worker")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="one end of a socketpair the daemon made")
    where.add_argument("--connect", help="the daemon's worker listener, host:port (a worker on another node)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args(argv)
    sock = connect(args.connect) if args.connect else socket.socket(fileno=args.fd)
    capture.install()
    run_loop(serve(sock, args.name, args.threads))
    sys.stdout.flush()
    os._exit(0)  # user threads may still run; the daemon asked us to stop


if __name__ == "__main__":
    main()
