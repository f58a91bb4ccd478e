"""User code for the parallelism tests (map, replicas, SPMD ranks), sent to clusters by import path."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time


def square(x):
    return x * x


def where(x=None):
    """Which process and host ran this item (the SSH test hosts share a hostname: each has its own HOME)."""
    return {"pid": os.getpid(), "home": os.environ.get("HOME"), "x": x}


def fail_at(x, bad):
    if x == bad:
        raise KeyError(f"item {x} is bad")
    return x


class Unpicklable(Exception):
    def __init__(self, x):
        super().__init__(f"unpicklable failure at {x}")
        self.lock = threading.Lock()


def fail_unpicklable(x):
    if x == 3:
        raise Unpicklable(x)
    return x


async def async_double(x):
    await asyncio.sleep(0.001)
    return 2 * x


def countdown(n):
    yield from range(n, 0, -1)


class Replica:
    """A stateful object whose replicas say where they live and how many calls each served."""

    def __init__(self):
        self.served = 0

    def where(self):
        self.served += 1
        return os.getpid()

    def hold(self, seconds):
        self.served += 1
        time.sleep(seconds)
        return os.getpid()

    def home(self):
        return os.environ.get("HOME")

    async def async_where(self):
        await asyncio.sleep(0.01)
        return os.getpid()

    def scale(self, x, by=1):
        return (os.getpid(), x * by)


SPMD_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")


def rank_info(tag):
    """This rank's SPMD variables, its pid and a tag: each rank must see its own."""
    return {
        "tag": tag,
        "pid": os.getpid(),
        "home": os.environ.get("HOME"),
        **{k: os.environ.get(k) for k in SPMD_VARS},
    }


def rendezvous(timeout=30.0):
    """Rank 0 listens on MASTER_ADDR:MASTER_PORT and collects every other rank's number; the others
    connect and send theirs. Rank 0 returns the sorted ranks it heard from; others return True."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    deadline = time.monotonic() + timeout
    if rank == 0:
        heard = [0]
        with socket.create_server((address, port), reuse_port=False) as server:
            server.settimeout(timeout)
            while len(heard) < world:
                conn, _ = server.accept()
                with conn:
                    heard.append(int(conn.recv(16).decode()))
        return sorted(heard)
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as conn:
                conn.sendall(str(rank).encode())
                return True
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def fail_on_rank(bad, hold=0.2):
    """Rank ``bad`` raises; the others wait ``hold`` seconds and return their rank."""
    rank = int(os.environ["RANK"])
    if rank == bad:
        raise ValueError(f"rank {rank} cannot go on")
    time.sleep(hold)
    return rank
