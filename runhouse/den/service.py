"""Running Den: in the foreground under uvicorn, or detached with a pid file, and stopping it.

Like the daemon (:mod:`runhouse.compute.local`), a detached Den runs in its own session, writes
``<data dir>/pid`` and ``<data dir>/url`` and logs to ``<data dir>/den.log``; it is stopped by
that pid, never by process name. The detached process is ``runhouse den start --foreground``
itself, so both ways share one set of options.

Serving Den and working on its database need its server libraries, the ``runhouse[den]`` extra;
this module itself needs only the core install, so ``runhouse den stop`` works without it, and
:func:`require_server_stack` turns a missing library into an install hint.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from runhouse.exceptions import ConfigError, ConnectionError_
from runhouse.settings import Settings, child_environ

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

INSTALL_HINT = 'pip install "runhouse[den]"'
# What the `den` extra installs, by import name; psycopg only for PostgreSQL databases.
SERVER_MODULES = ("fastapi", "sqlalchemy", "alembic", "jinja2")
POSTGRES_MODULE = "psycopg"


def default_data_dir(settings: Settings) -> Path:
    return settings.home / "den"


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'den.sqlite'}"


@dataclass(frozen=True)
class DenOptions:
    """Where Den listens and what it stores into."""

    data_dir: Path
    db_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "pid"

    @property
    def url_file(self) -> Path:
        return self.data_dir / "url"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "den.log"


def missing_server_modules(db_url: str | None = None) -> list[str]:
    """The server libraries Den needs (for ``db_url``) that cannot be imported here."""
    needed = list(SERVER_MODULES)
    if db_url is not None and db_url.startswith("postgresql"):
        needed.append(POSTGRES_MODULE)
    return [name for name in needed if importlib.util.find_spec(name) is None]


def require_server_stack(db_url: str | None = None) -> None:
    """Raise :class:`ConfigError` with the install hint unless Den's server libraries are installed."""
    missing = missing_server_modules(db_url)
    if missing:
        raise ConfigError(
            f"Den's server needs {', '.join(missing)}, which the core install (client and daemon) "
            f"leaves out; install the den extra: {INSTALL_HINT}"
        )


def health(url: str, timeout: float = 1.0) -> dict[str, object] | None:
    """``GET /health`` once; the reply, or None if no Den answers at ``url``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", "/health")
        reply = conn.getresponse()
        if reply.status != 200:
            return None
        found: dict[str, object] = json.loads(reply.read())
        return found
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def running_pid(data_dir: Path) -> int | None:
    """The pid of the Den serving ``data_dir`` if its pid file names a live Den process."""
    try:
        pid = int((data_dir / "pid").read_text().strip())
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    if "den" not in cmdline or "--foreground" not in cmdline:
        return None  # the pid was reused by an unrelated process
    return pid


def running_url(data_dir: Path) -> str | None:
    try:
        return (data_dir / "url").read_text().strip() or None
    except OSError:
        return None


def serve(options: DenOptions, secret_key: str | None = None) -> None:
    """Run Den in this process until SIGTERM/SIGINT (migrating the database first)."""
    require_server_stack(options.db_url)
    # Imported here so that `runhouse den stop` and the other commands do not load the web stack.
    import uvicorn

    from runhouse.den.app import create_app

    options.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    app = create_app(options.db_url, options.data_dir, secret_key)
    options.pid_file.write_text(str(os.getpid()))
    options.url_file.write_text(options.url)
    try:
        uvicorn.Server(uvicorn.Config(app, host=options.host, port=options.port, log_level="info")).run()
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(options.pid_file.read_text()) == os.getpid():
                options.pid_file.unlink()


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_detached(
    options: DenOptions, extra_env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S
) -> tuple[int, str, bool]:
    """Start Den in the background and wait for ``/health``: ``(pid, url, started)``; ``started`` is
    False when a Den already serves this data dir (then its pid and URL are returned)."""
    existing = running_pid(options.data_dir)
    if existing is not None:
        url = running_url(options.data_dir) or options.url
        if health(url):
            return existing, url, False
    options.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if health(options.url):
        raise ConnectionError_(
            f"another Den already answers at {options.url}; stop it or pick another --port"
        )
    command = [
        sys.executable, "-m", "runhouse.cli", "den", "start", "--foreground",
        "--host", options.host, "--port", str(options.port),
        "--db", options.db_url, "--data-dir", str(options.data_dir),
    ]  # fmt: skip
    with open(options.log_file, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=child_environ(extra_env),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConnectionError_(
                f"Den exited with code {proc.returncode} while starting on {options.url}. "
                f"Last lines of {options.log_file}:\n{_log_tail(options.log_file)}"
            )
        if health(options.url, timeout=0.5) and running_pid(options.data_dir) == proc.pid:
            return proc.pid, options.url, True
        time.sleep(0.05)
    _terminate(proc.pid)
    raise ConnectionError_(
        f"Den did not answer on {options.url} within {timeout:.0f}s. "
        f"Last lines of {options.log_file}:\n{_log_tail(options.log_file)}"
    )


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def stop(data_dir: Path, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """Stop the Den serving ``data_dir``; its pid, or None if none was running."""
    pid = running_pid(data_dir)
    if pid is None:
        return None
    _terminate(pid, timeout)
    with contextlib.suppress(OSError):
        (data_dir / "pid").unlink()
    return pid
