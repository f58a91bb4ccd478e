"""Shared fixtures: a private RH_HOME, free ports, and real daemons started on them."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
sys.path.insert(0, str(ASSETS))  # user code the tests send to clusters is imported from here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def rh_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("rh_home")
    old = os.environ.get("RH_HOME")
    os.environ["RH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("RH_HOME", None)
    else:
        os.environ["RH_HOME"] = old


def start_cluster(name: str = "test") -> object:
    import runhouse as rh

    return rh.cluster(
        name=name, host="localhost", server_connection_type="none", server_port=free_port()
    ).up()


@pytest.fixture(scope="session")
def cluster(rh_home: Path) -> Iterator[object]:
    """One daemon shared by tests that do not stop it or kill its workers."""
    c = start_cluster("shared")
    yield c
    c.teardown()  # type: ignore[attr-defined]


@pytest.fixture
def own_cluster(rh_home: Path) -> Iterator[object]:
    """A daemon of the test's own, for tests that restart, tear down or crash things."""
    c = start_cluster("own")
    yield c
    c.teardown()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def sky_home(tmp_path_factory) -> Iterator[Path]:
    """SkyPilot's home for an on-demand test module (shipped catalogs, clouds recorded as enabled:
    tests/compute/skylab.py); HOME is put back after the module."""
    import skylab  # tests/compute, on sys.path while its modules run

    old = os.environ.get("HOME")
    yield skylab.make_sky_home(tmp_path_factory.mktemp("sky-home"))
    if old is not None:
        os.environ["HOME"] = old
