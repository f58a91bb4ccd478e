"""Worker process entry point: ``python -m runhouse.server.worker --fd N --name ENV``.

Started by the daemon with one end of a socketpair as file descriptor ``N``; serves messages on
it until the daemon closes it, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

from runhouse.protocol.ipc import open_channel
from runhouse.server.loop import run_loop
from runhouse.server.worker import capture
from runhouse.server.worker.runtime import WorkerRuntime


async def serve(fd: int, name: str, threads: int) -> None:
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    sock = socket.socket(fileno=fd)
    runtime: WorkerRuntime | None = None

    def on_message(header: object, body: object) -> None:
        assert runtime is not None
        runtime.on_message(header, body)  # type: ignore[arg-type]

    def on_close(exc: Exception | None) -> None:
        if not closed.done():
            closed.set_result(None)

    channel = await open_channel(sock, on_message, on_close)
    runtime = WorkerRuntime(name, channel.send, loop, threads)
    channel.send(("hello", 0, os.getpid()), None)
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
