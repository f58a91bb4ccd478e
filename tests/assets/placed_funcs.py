"""User code for placement tests: where a worker runs, seen from inside it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import psutil


def where() -> dict[str, object]:
    """The worker's home, pid and the IPv4 addresses of the network namespace it runs in."""
    addresses = sorted(
        a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family.name == "AF_INET"
    )
    return {
        "home": str(Path.home()),
        "pid": os.getpid(),
        "addresses": addresses,
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def write_home_file(name: str, text: str) -> str:
    """Write ``text`` to ``~/name`` on the worker's host; return the path."""
    path = Path.home() / name
    path.write_text(text)
    return str(path)


def array_round_trip(x):
    return x


class Blob:
    """Bytes that pickle out of band (protocol 5), as numpy arrays do."""

    def __init__(self, data) -> None:
        self.data = data

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return (_blob, (pickle.PickleBuffer(self.data),))
        return (_blob, (bytes(self.data),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and bytes(self.data) == bytes(other.data)


def _blob(buffer) -> Blob:
    return Blob(memoryview(buffer))
