"""User code the tests send to clusters by import path."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time


def add(a, b):
    return a + b


def identity(x):
    return x


def getpid():
    return os.getpid()


def get_env(name):
    return os.environ.get(name)


def tick(n, interval=1.0):
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(interval)
    return "done"


def log_lines():
    logging.getLogger("user.code").info("info from the worker")
    logging.getLogger("user.code").warning("warning from the worker")
    return "logged"


def fail(message):
    raise ValueError(message)


def fail_deep():
    def inner():
        raise KeyError("missing-thing")

    inner()


def slow_items(n, interval=0.5):
    for i in range(n):
        time.sleep(interval)
        yield i


async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


async def async_items(n):
    for i in range(n):
        await asyncio.sleep(0.01)
        yield i * 2


def sleep_and_thread(seconds):
    time.sleep(seconds)
    return threading.get_ident()


def takes_options(x, stream_logs=None, run_name=None):
    return {"x": x, "stream_logs": stream_logs, "run_name": run_name}


def die(code=3):
    os._exit(code)


def segfault():
    import ctypes

    ctypes.string_at(0)


def print_and_return(text):
    print(text)
    return len(text)


class Counter:
    kind = "counter"

    def __init__(self, start=0, step=1):
        self.value = start
        self.step = step
        print(f"Counter starting at {start}")

    def incr(self, by=None):
        self.value += self.step if by is None else by
        return self.value

    @property
    def doubled(self):
        return self.value * 2

    @classmethod
    def describe(cls):
        return f"class {cls.__name__} ({cls.kind})"

    @staticmethod
    def square(x):
        return x * x

    async def aincr(self):
        await asyncio.sleep(0.01)
        self.value += 1
        return self.value

    def countdown(self, n):
        yield from range(n, 0, -1)


class Named:
    def __init__(self, name, size=1):
        self.name = name
        self.size = size

    def describe(self):
        return f"{self.name}:{self.size}"


def module_version(module_name):
    import importlib

    module = importlib.import_module(module_name)
    return getattr(module, "__version__", None) or getattr(module, "VERSION", None)


def cwd_and_files():
    return os.getcwd(), sorted(os.listdir("."))


def python_prefix():
    import sys

    return sys.prefix


def nbytes(x):
    return int(getattr(x, "nbytes", len(x)))


_KEPT: dict = {}


def keep(x, tag):
    """Holds every argument it gets under ``tag`` (the worker keeps each alive) and returns what
    they sum to now: a kept array whose memory was used again for a later call would sum to
    something else."""
    kept = _KEPT.setdefault(tag, [])
    kept.append(x)
    return [int(a.sum()) for a in kept]


def make_array(n):
    import numpy as np

    return np.ones(n // 8)


def sigkill_self():
    """What the kernel's OOM killer does to a process: SIGKILL, no cleanup."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def apply(fn, value):
    return fn(value)


# -- cancellation and timeouts (tests/server/test_cancel.py) -------------------------------------


def _note(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


def loop_in_python(path, say=False, interval=0.05):
    """Never returns: appends a line to ``path`` (and prints, with ``say``) every ``interval``."""
    _note(path, "start")
    while True:
        _note(path, "tick")
        if say:
            print("tick", flush=True)
        time.sleep(interval)


def block_in_c(path):
    """Never returns, blocked in C where no interrupt reaches it."""
    _note(path, "start")
    threading.Event().wait()


async def wait_async(path, seconds=3600):
    _note(path, "start")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _note(path, "cancelled")
        raise
    return seconds


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def takes_timeout(x, timeout=None):
    return {"x": x, "timeout": timeout}


def on_loop_thread(block_s=0.0):
    """Whether the worker ran this call on its event loop's thread (a promoted fast method)."""
    if block_s:
        time.sleep(block_s)
    return threading.current_thread() is threading.main_thread()


_BARRIERS: dict = {}


def meet(parties, timeout=30.0):
    """Wait until ``parties`` calls are inside this function at once; True if they all met in time."""
    import threading

    barrier = _BARRIERS.setdefault(parties, threading.Barrier(parties))
    try:
        barrier.wait(timeout)
        return True
    except threading.BrokenBarrierError:
        return False


# -- the original's API: stubs that travel (tests/resources/test_original_*.py) -----------------


def call_method(obj, method, *args):
    """Call ``method`` of ``obj`` (a module stub passed in from the client) on the cluster."""
    return getattr(obj, method)(*args)


def keys_of(cluster):
    """Keys of ``cluster`` (a cluster object passed in from the client), read on the cluster."""
    return sorted(cluster.keys())


def call_by_name(cluster, fn_name, *args):
    """On the cluster: load a stub for another function on the same cluster and call it."""
    import runhouse as rh

    return rh.function(name=fn_name, system=cluster)(*args)


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def typed(a: int, b: str = "x", c: float = 1.0) -> str:
    """Repeat b a times.

    More words here."""
    return b * a


class Worker:
    """A stateful object whose replicas say which process they live in."""

    def __init__(self, label="w"):
        self.label = label
        self.calls = 0

    def pid(self):
        self.calls += 1
        return os.getpid()
