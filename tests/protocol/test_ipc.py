"""The daemon-worker channel over a real socketpair."""

from __future__ import annotations

import asyncio
import os
import socket

from runhouse.protocol.ipc import open_channel


def test_messages_small_and_large_arrive_whole_and_in_order():
    async def main():
        left, right = socket.socketpair()
        got = []
        done = asyncio.get_running_loop().create_future()

        def on_message(header, body):
            got.append((header, None if body is None else bytes(body)))
            if len(got) == 5:
                done.set_result(None)

        sender = await open_channel(left, lambda h, b: None, lambda e: None)
        await open_channel(right, on_message, lambda e: None)
        big = os.urandom(30_000_000)
        sender.send(("a", 1))
        sender.send(("b", 2), b"xyz")
        sender.send(("big",), big)
        sender.send(("header-only", "x" * 400_000))  # a header larger than the receive buffer
        sender.send(("c",), b"q" * 300_000)
        await asyncio.wait_for(done, 30)
        assert got[0] == (("a", 1), None) and got[1] == (("b", 2), b"xyz")
        assert got[2][1] == big and got[3][0][1] == "x" * 400_000 and got[4][1] == b"q" * 300_000
        sender.close()

    asyncio.run(main())


def test_peer_close_is_reported():
    async def main():
        left, right = socket.socketpair()
        closed = asyncio.get_running_loop().create_future()
        await open_channel(left, lambda h, b: None, lambda e: closed.set_result(True))
        right.close()
        assert await asyncio.wait_for(closed, 5)

    asyncio.run(main())
