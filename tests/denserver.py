"""Real Den services for tests: ``runhouse den start`` subprocesses on free ports, on SQLite or on a
throwaway PostgreSQL server of the test session's own.

::

    den = start_den(tmp_path / "den")                   # SQLite in the data dir
    den = start_den(tmp_path / "den", postgres_url())   # a fresh database on the throwaway server
    token = den.add_user("alice")                       # `runhouse den user add alice --db ...`
    den.stop()

PostgreSQL is found under ``/usr/lib/postgresql/*/bin`` (or on PATH); when it is missing,
:func:`postgres_url` raises with an install hint, so the tests that need it fail rather than skip.
The server runs as the ``postgres`` OS user when we are root (PostgreSQL refuses root), listens on
127.0.0.1 with trust authentication, and is stopped with ``pg_ctl stop`` when this process exits.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import httpx

INSTALL_HINT = (
    "PostgreSQL is not installed, and Den's PostgreSQL tests need its initdb and pg_ctl: install it "
    "(Debian/Ubuntu: apt-get update && apt-get install -y postgresql; CI's .ci/run does this)"
)


_numbers = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A user or resource name no other test in this Den has used: ``prefix`` plus a suffix."""
    return f"{prefix}{next(_numbers)}-{uuid.uuid4().hex[:6]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DenServer:
    """A running ``runhouse den start`` subprocess."""

    def __init__(self, url: str, db_url: str, data_dir: Path, env: dict[str, str]) -> None:
        self.url = url
        self.db_url = db_url
        self.data_dir = data_dir
        self.env = env

    def cli(
        self, *args: str, check: bool = True, env: dict | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``runhouse den ARGS...`` with this Den's environment (add ``--db`` yourself)."""
        proc = subprocess.run(
            [sys.executable, "-m", "runhouse.cli", "den", *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"runhouse den {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def add_user(self, name: str) -> str:
        """Create a user with ``runhouse den user add``; returns their token."""
        return self.cli("user", "add", name, "--db", self.db_url).stdout.strip().splitlines()[-1]

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for this Den, sending ``token`` if given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stored_text(self) -> str:
        """Everything the database holds, as text: every row of every table, plus for SQLite the raw
        bytes of the database and WAL files (which also keep old page images)."""
        from sqlalchemy import create_engine, inspect, text

        parts: list[str] = []
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                for table in inspect(conn).get_table_names():
                    parts.extend(repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"')))
        finally:
            engine.dispose()
        if self.db_url.startswith("sqlite:///"):
            path = Path(self.db_url.removeprefix("sqlite:///"))
            for file in (path, path.with_name(path.name + "-wal")):
                if file.exists():
                    parts.append(file.read_bytes().decode("latin-1"))
        return "\n".join(parts)

    def stop(self) -> None:
        self.cli("stop", "--data-dir", str(self.data_dir))


def start_den(data_dir: Path, db_url: str | None = None, env: dict | None = None) -> DenServer:
    """Start Den with ``runhouse den start`` on a free port (SQLite in ``data_dir`` by default)."""
    data_dir = Path(data_dir).resolve()
    db_url = db_url or f"sqlite:///{data_dir / 'den.sqlite'}"
    full_env = {**os.environ, **(env or {})}
    failure = ""
    for _ in range(3):  # a free port can be taken by someone else before Den binds it
        port = free_port()
        proc = subprocess.run(
            [sys.executable, "-m", "runhouse.cli", "den", "start", "--port", str(port),
             "--db", db_url, "--data-dir", str(data_dir)],
            capture_output=True, text=True, env=full_env, timeout=120,
        )  # fmt: skip
        if proc.returncode == 0:
            return DenServer(f"http://127.0.0.1:{port}", db_url, data_dir, full_env)
        failure = proc.stdout + proc.stderr
    raise RuntimeError(f"runhouse den start failed:\n{failure}")


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise RuntimeError(INSTALL_HINT)


class _Postgres:
    """A throwaway PostgreSQL server in a temp folder."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="rh-den-pg-"))
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.port = 0
        for _ in range(3):
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            started = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "-t", "60",
                "start", check=False,
            )  # fmt: skip
            if started.returncode == 0:
                break
        else:
            log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{started.stdout}{started.stderr}\n{log}")
        self.names = itertools.count(1)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def new_database(self) -> str:
        import psycopg

        name = f"den_{os.getpid()}_{next(self.names)}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


_server: _Postgres | None = None
_lock = threading.Lock()


def postgres_url() -> str:
    """A URL to a fresh, empty database on this process's throwaway PostgreSQL (started on first use)."""
    global _server
    with _lock:
        if _server is None:
            _server = _Postgres()
            atexit.register(_server.stop)
        return _server.new_database()
