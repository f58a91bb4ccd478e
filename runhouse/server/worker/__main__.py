"""Worker process entry point: ``python -m runhouse.server.worker --fd N --name ENV``.

Started by the daemon with one end of a socketpair as file descriptor ``N``; serves messages on
it until the daemon closes it, then exits. Records of :mod:`runhouse.protocol.messages` cross the
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

from runhouse.protocol.ipc import open_channel
from runhouse.protocol.messages import Hello, ProtocolError, WorkerReply, decode_request
from runhouse.server.loop import run_loop
from runhouse.server.worker import capture
from runhouse.server.worker.runtime import WorkerRuntime


async def serve(fd: int, name: str, threads: int) -> None:
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    sock = socket.socket(fileno=fd)
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
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args(argv)
    capture.install()
    run_loop(serve(args.fd, args.name, args.threads))
    sys.stdout.flush()
    os._exit(0)  # user threads may still run; the daemon asked us to stop


if __name__ == "__main__":
    main()
