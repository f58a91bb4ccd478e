"""Large receive buffers are used again only when nothing refers to them: a body a program still
holds (an array unpickled out of it, a view of it) keeps its bytes when the next large message
arrives, and an idle pool lets its memory go."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket

import numpy as np

from runhouse.protocol import buffers
from runhouse.protocol.buffers import BufferPool
from runhouse.protocol.ipc import open_channel

MB = 1 << 20


def test_a_free_buffer_is_reused_and_a_held_one_never_is():
    pool = BufferPool()
    first = pool.take(4 * MB)
    first_id = id(first)
    del first
    second = pool.take(4 * MB)
    assert id(second) == first_id and pool.reused == 1  # the same pages again

    second[:3] = b"abc"
    array = np.frombuffer(second, dtype=np.uint8)  # refers to the buffer, as an unpickled array does
    view = memoryview(second)[:10]
    del second
    third = pool.take(4 * MB)
    assert id(third) != first_id and pool.reused == 1
    third[:3] = b"xyz"
    assert bytes(array[:3]) == b"abc" and bytes(view[:3]) == b"abc"

    del array
    fourth = pool.take(4 * MB)
    assert id(fourth) != first_id  # the view still holds it
    del view, third, fourth
    pool.take(4 * MB)
    assert pool.reused == 2  # nothing refers to the first any more


def test_only_the_exact_size_is_reused_and_small_bodies_are_not_pooled():
    pool = BufferPool()
    pool.take(4 * MB)
    assert len(pool.take(5 * MB)) == 5 * MB and pool.reused == 0
    assert len(pool.take(1000)) == 1000 and pool.held() == 9 * MB


def test_the_pool_keeps_at_most_its_caps_and_trims_when_idle():
    now = [0.0]
    pool = BufferPool(keep_bytes=10 * MB, keep_count=2, idle_s=2.0, clock=lambda: now[0])
    for size in (3, 4, 5):
        pool.take(size * MB)
    assert pool.held() == 9 * MB  # the oldest (3 MB) went: two at most
    pool.take(20 * MB)  # larger than the byte cap: handed out, never kept
    assert pool.held() == 9 * MB
    now[0] = 1.0
    pool.take(5 * MB)
    now[0] = 2.5
    pool.trim()
    assert pool.held() == 5 * MB  # the 4 MB buffer was idle for 2.5 s; the 5 MB one for 1.5 s
    now[0] = 4.0
    pool.trim()
    assert pool.held() == 0


def test_a_channel_reuses_a_released_body_and_never_overwrites_a_held_one(monkeypatch):
    pool = BufferPool(idle_s=0.3)
    monkeypatch.setattr(buffers, "POOL", pool)
    monkeypatch.setattr("runhouse.protocol.ipc.POOL", pool)

    async def main() -> None:
        left, right = socket.socketpair()
        queue: asyncio.Queue = asyncio.Queue()
        sender = await open_channel(left, lambda h, b: None, lambda e: None)
        await open_channel(right, lambda h, b: queue.put_nowait((h, b)), lambda e: None)

        def send_array(tag: int, fill: int) -> None:
            payload = np.full(3 * MB, fill, dtype=np.uint8)
            sender.send(("array", tag), pickle.dumps(payload, protocol=5))

        send_array(1, 1)
        _, body = await asyncio.wait_for(queue.get(), 10)
        held = pickle.loads(body)  # a copy: the held array below is a view
        kept = np.frombuffer(body, dtype=np.uint8)
        first_id = id(body)
        del body

        send_array(2, 2)  # the first body is still referenced (kept): a new buffer
        _, body = await asyncio.wait_for(queue.get(), 10)
        assert id(body) != first_id and pool.reused == 0
        assert int(held.sum()) == 3 * MB and set(np.unique(kept[-2 * MB : -MB])) == {1}
        second_id = id(body)
        del body, kept

        send_array(3, 3)  # both are free now: one of them is used again
        _, body = await asyncio.wait_for(queue.get(), 10)
        assert id(body) in {first_id, second_id} and pool.reused == 1
        assert set(np.unique(np.frombuffer(body, dtype=np.uint8)[-2 * MB : -MB])) == {3}
        del body

        await asyncio.sleep(0.8)  # no large message for longer than idle_s: the pool lets go
        assert pool.held() == 0
        sender.close()

    asyncio.run(main())


def test_a_large_random_body_arrives_intact_through_a_reused_buffer():
    async def main() -> None:
        left, right = socket.socketpair()
        queue: asyncio.Queue = asyncio.Queue()
        sender = await open_channel(left, lambda h, b: None, lambda e: None)
        await open_channel(right, lambda h, b: queue.put_nowait(b), lambda e: None)
        for _ in range(3):
            data = os.urandom(6 * MB)
            sender.send(("blob",), data)
            body = await asyncio.wait_for(queue.get(), 10)
            assert bytes(body) == data
            del body
        sender.close()

    asyncio.run(main())


def test_a_process_without_an_event_loop_trims_with_a_timer_thread():
    """The sync client's pool: a timer thread lets idle buffers go, and waits while takes go on."""
    import time

    pool = BufferPool(idle_s=0.3)
    for _ in range(3):
        pool.take(2 * MB)
        pool.trim_soon()
        time.sleep(0.1)  # takes keep coming: nothing is dropped yet
        assert pool.held() == 2 * MB
    deadline = time.monotonic() + 5
    while pool.held():
        assert time.monotonic() < deadline, "an idle pool kept its buffers"
        time.sleep(0.05)
