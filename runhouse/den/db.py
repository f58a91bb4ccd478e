"""Den's database: engine set-up for SQLite and PostgreSQL, read and write transactions, migrations.

Writes that race (the same name saved from many processes) are made safe in the database rather
than in Python, because several Den processes may share one PostgreSQL:

- SQLite: every write transaction starts with ``BEGIN IMMEDIATE``, which takes the write lock up
  front, so writers queue (for up to ``BUSY_TIMEOUT_S``) instead of failing when a reader tries
  to upgrade. WAL mode lets readers go on meanwhile.
- PostgreSQL: the row being changed is locked with ``SELECT ... FOR UPDATE`` by the code that
  changes it; the first save of a new name is guarded by a unique constraint. A transaction that
  loses such a race (unique violation, deadlock, serialization failure) is run again from the
  start by :meth:`Database.write`, up to ``WRITE_ATTEMPTS`` times.

Schema changes go through Alembic only: :meth:`Database.upgrade` runs ``upgrade head`` with the
scripts shipped in ``runhouse/den/migrations``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from runhouse.den.errors import Busy, Conflict, InvalidInput

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_S = 30.0
WRITE_ATTEMPTS = 8
# PostgreSQL advisory lock id that serializes migrations of Dens starting at once on one database.
_MIGRATION_LOCK = 0x52480D3E
_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the "begin" hook below emit BEGIN itself (pysqlite would otherwise issue a
        # deferred BEGIN before the first write, too late to take the lock up front).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("rh_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engine(url: str) -> Engine:
    """An engine for a ``sqlite:///path`` or ``postgresql+psycopg://...`` URL."""
    try:
        backend = make_url(url).get_backend_name()
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises several types for bad URLs
        raise InvalidInput(
            f"cannot use database URL {url!r}: {e}. Use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        ) from e
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        # No pool_pre_ping: it costs a round trip per transaction. A connection the server dropped
        # fails one request (503), is discarded by SQLAlchemy, and the next request reconnects.
        return create_engine(url, pool_size=10, max_overflow=20)
    raise InvalidInput(f"Den supports SQLite and PostgreSQL databases, not {backend!r} ({url!r})")


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


class Database:
    """One database Den stores into; build with a URL, use :meth:`read` and :meth:`write`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writer = self.engine.execution_options(rh_write=True)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; whatever it changed is rolled back."""
        with Session(self.engine) as session:  # closing rolls back the implicit transaction
            yield session

    def write(self, work: Callable[[Session], T], attempts: int = WRITE_ATTEMPTS) -> T:
        """Run ``work`` in one write transaction and commit; run it again if it lost a race.

        ``work`` must do all of its reads inside the session it is given, so that a rerun sees
        what the winner of the race committed."""
        for attempt in range(attempts):
            try:
                with Session(self._writer, expire_on_commit=False) as session, session.begin():
                    return work(session)
            except DBAPIError as e:
                if isinstance(e, OperationalError) and "locked" in str(e.orig):
                    raise Busy(f"the database stayed locked for {BUSY_TIMEOUT_S:.0f}s; try again") from e
                if not _retryable(e):
                    raise
                if attempt == attempts - 1:
                    raise Conflict(
                        f"the change collided with {attempts} concurrent changes in a row; try again"
                    ) from e
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def upgrade(self) -> None:
        """Create or update the schema: Alembic ``upgrade head`` with Den's shipped migrations."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._writer.begin() as connection:
            if self.dialect == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
