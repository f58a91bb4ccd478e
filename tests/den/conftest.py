"""Den fixtures: one real Den per database (``den_sqlite``, ``den_pg``) for the session, ``den``
parametrized over both, and ``people`` to make users with tokens quickly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from denserver import DenServer, postgres_url, start_den, unique_name

from runhouse.den import admin
from runhouse.den.db import Database


@pytest.fixture(scope="session")
def den_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DenServer]:
    den = start_den(tmp_path_factory.mktemp("den-sqlite"))
    yield den
    den.stop()


@pytest.fixture(scope="session")
def den_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DenServer]:
    den = start_den(tmp_path_factory.mktemp("den-pg"), postgres_url())
    yield den
    den.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def den(request: pytest.FixtureRequest) -> DenServer:
    server: DenServer = request.getfixturevalue("den_pg" if request.param == "postgresql" else "den_sqlite")
    return server


@dataclass
class Person:
    name: str
    token: str
    http: httpx.Client


_databases: dict[str, Database] = {}


@pytest.fixture
def people(den: DenServer) -> Iterator[Callable[[str], Person]]:
    """``people("alice")`` makes a new user (a unique name starting with "alice") and a client.

    Users are added through Den's admin module in this process (the same code `runhouse den user
    add` runs, minus starting Python), so tests can make many; the CLI has tests of its own."""
    clients: list[httpx.Client] = []

    def make(prefix: str) -> Person:
        db = _databases.get(den.db_url) or _databases.setdefault(den.db_url, Database(den.db_url))
        minted = admin.add_user(db, unique_name(prefix))
        client = den.client(minted.token)
        clients.append(client)
        return Person(minted.username, minted.token, client)

    yield make
    for client in clients:
        client.close()
