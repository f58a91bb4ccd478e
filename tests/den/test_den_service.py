"""`runhouse den start/stop/user/token`, migrations and packaging, against real services."""

from __future__ import annotations

import glob
from pathlib import Path

import httpx
import psutil
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from denserver import DenServer, start_den, unique_name
from sqlalchemy import create_engine, inspect

import runhouse.den
from runhouse.den.db import MIGRATIONS_DIR
from runhouse.den.models import Base

REPO = Path(__file__).resolve().parents[2]


def test_start_serves_on_loopback_with_a_pid_file_and_stop_ends_it(tmp_path: Path) -> None:
    den = start_den(tmp_path / "den")
    pid = int((den.data_dir / "pid").read_text())
    try:
        assert (den.data_dir / "url").read_text() == den.url
        assert httpx.get(f"{den.url}/health").json()["status"] == "ok"
        listening = [c.laddr for c in psutil.Process(pid).net_connections() if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        again = den.cli("start", "--port", den.url.rsplit(":", 1)[1], "--data-dir", str(den.data_dir))
        assert "already running" in again.stdout and den.url in again.stdout
        clash = den.cli(
            "start", "--port", den.url.rsplit(":", 1)[1], "--data-dir", str(tmp_path / "other"), check=False
        )
        assert clash.returncode == 1 and "another Den already answers" in clash.stderr
    finally:
        stopped = den.cli("stop", "--data-dir", str(den.data_dir))
    assert f"pid {pid}" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (den.data_dir / "pid").exists()
    assert "No Den of ours" in den.cli("stop", "--data-dir", str(den.data_dir)).stdout


def test_start_with_an_unsupported_database_fails_clearly(tmp_path: Path, den_sqlite: DenServer) -> None:
    bad = den_sqlite.cli(
        "start", "--port", "1", "--data-dir", str(tmp_path / "d"), "--db", "mysql://x/y", check=False
    )
    assert bad.returncode == 1
    assert "Could not start Den" in bad.stderr and "SQLite and PostgreSQL" in bad.stderr


def test_user_add_prints_the_token_last_and_refuses_duplicates(den: DenServer) -> None:
    name = unique_name("cli-user")
    token = den.add_user(name)
    with den.client(token) as http:
        assert http.get("/v1/me").json() == {"username": name}
    wide = {"COLUMNS": "250"}  # rich wraps at the terminal width; the name's length varies
    again = den.cli("user", "add", name, "--db", den.db_url, check=False, env=wide)
    assert again.returncode == 1
    assert "already exists" in again.stderr and f"runhouse den token add {name}" in again.stderr
    bad = den.cli("user", "add", "no spaces", "--db", den.db_url, check=False)
    assert bad.returncode == 1 and "invalid username" in bad.stderr


def test_token_add_list_and_revoke(den: DenServer) -> None:
    name = unique_name("tok-user")
    first = den.add_user(name)
    second = den.cli("token", "add", name, "--name", "ci", "--db", den.db_url).stdout.strip().splitlines()[-1]
    listing = den.cli("token", "list", name, "--db", den.db_url, env={"COLUMNS": "200"}).stdout
    assert first not in listing and second not in listing
    ids = [line.split()[1] for line in listing.splitlines() if " user " in line]
    assert len(ids) == 2
    for token_id in ids:
        den.cli("token", "revoke", token_id, "--db", den.db_url)
    for token in (first, second):
        with den.client(token) as http:
            assert http.get("/v1/me").status_code == 401
    assert "yes" in den.cli("token", "list", name, "--db", den.db_url, env={"COLUMNS": "200"}).stdout
    missing = den.cli("token", "revoke", "nope", "--db", den.db_url, check=False)
    assert missing.returncode == 1 and "no token with id 'nope'" in missing.stderr
    unknown_user = den.cli("token", "add", "nobody-xyz", "--db", den.db_url, check=False)
    assert unknown_user.returncode == 1 and "no user named" in unknown_user.stderr


def test_schema_is_made_by_alembic_and_matches_the_models(den: DenServer) -> None:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    engine = create_engine(den.db_url)
    try:
        with engine.connect() as conn:
            assert "alembic_version" in inspect(conn).get_table_names()
            context = MigrationContext.configure(conn)
            assert context.get_current_revision() == head
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrations_ship_in_the_package() -> None:
    """A non-editable install must carry migrations/: the package-data patterns cover every file."""
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package_dir = Path(runhouse.den.__file__).parent
    shipped = {Path(p) for pattern in patterns["runhouse.den"] for p in glob.glob(str(package_dir / pattern))}
    needed = {p for p in MIGRATIONS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert needed and needed <= shipped
