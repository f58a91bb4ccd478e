"""Starting and stopping a daemon on this machine, by pid file, never by process name.

The daemon runs detached in its own session (so it outlives the shell that started it) and
writes ``$RH_HOME/daemons/<port>/pid``; its workers are its children in the same process group.
Stopping sends SIGTERM to that pid and waits, then SIGKILLs the group only if it must.
:class:`runhouse.compute.daemon.LocalDaemon` makes these functions a kind of cluster.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import psutil

from runhouse.exceptions import ConnectionError_
from runhouse.settings import Settings, child_environ

# Client-side Den login values: never passed on to a daemon or its workers.
DEN_LOGIN_VARS = ("RH_TOKEN", "RH_DEN_URL", "RH_USERNAME")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def token_path(settings: Settings, port: int) -> Path:
    return settings.daemon_dir(port) / "token"


def daemon_environ(settings: Settings, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a daemon starts with: ours without Den login values (a user's Den token is
    never handed to a cluster), plus ``extra_env``."""
    env = child_environ({**(extra_env or {}), "RH_HOME": str(settings.home)})
    for key in DEN_LOGIN_VARS:
        env.pop(key, None)
    return env


OPTIONS_FILE = "options.json"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def start_options(settings: Settings, port: int) -> dict[str, object]:
    """How the daemon on ``port`` was last started (host, tls, autostop_mins, den_auth), or {}."""
    try:
        loaded = json.loads((settings.daemon_dir(port) / OPTIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def write_den_identity(settings: Settings, port: int, den_url: str, cluster: str, token: str) -> Path:
    """Give the daemon on ``port`` its Den identity (``den.json``, mode 0600): Den's URL, the
    cluster's Den name and the daemon token Den issued for it."""
    folder = settings.make_daemon_dir(port)
    path = folder / "den.json"
    _write_private(path, json.dumps({"den_url": den_url, "cluster": cluster, "token": token}))
    return path


CLUSTER_FILE = "cluster.json"  # the cluster's config (no credentials); the daemon's status shows it


def cluster_config(settings: Settings, port: int) -> dict[str, object]:
    """The config the client that started the daemon on ``port`` recorded for it, or {}."""
    try:
        loaded = json.loads((settings.daemon_dir(port) / CLUSTER_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def read_token(settings: Settings, port: int) -> str | None:
    path = token_path(settings, port)
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def log_path(settings: Settings, port: int) -> Path:
    return settings.daemon_dir(port) / "daemon.log"


def daemon_pid(settings: Settings, port: int) -> int | None:
    """The pid of our daemon on ``port`` if its pid file names a live daemon process."""
    try:
        pid = int((settings.daemon_dir(port) / "pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if "runhouse.server" not in " ".join(proc.cmdline()):
            return None  # the pid was reused by an unrelated process
    except psutil.Error:
        return None
    return pid


def ping(host: str, port: int, timeout: float = 1.0, tls: bool = False) -> dict[str, object] | None:
    """``GET /check`` once; the parsed reply, or None if nothing answers."""
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    conn: http.client.HTTPConnection
    if tls:  # our own daemon on this machine: its self-signed certificate is not checked here
        conn = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl._create_unverified_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/check")
        reply = conn.getresponse()
        if reply.status != 200:
            return None
        return json.loads(reply.read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _log_tail(settings: Settings, port: int, lines: int = 20) -> str:
    try:
        return "\n".join(log_path(settings, port).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_daemon(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = START_TIMEOUT_S,
    extra_env: dict[str, str] | None = None,
    tls: bool = False,
    autostop_mins: float | None = None,
    den_auth: bool = False,
) -> int:
    """Start the daemon detached and wait until it answers ``/check``; return its pid.

    ``extra_env`` is added to the daemon's environment, which its workers inherit."""
    port = port or settings.port
    existing = daemon_pid(settings, port)
    if existing is not None and ping(host, port, tls=tls):
        return existing
    folder = settings.make_daemon_dir(port)
    if ping(host, port, tls=tls):
        raise ConnectionError_(
            f"port {port} on {host} is already served by another runhouse daemon whose pid file is not "
            f"under {settings.home}; stop it or pick another port"
        )
    with open(log_path(settings, port), "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runhouse.server",
                "--host",
                host,
                "--port",
                str(port),
                *(["--tls"] if tls else []),
                *(["--autostop-mins", str(autostop_mins)] if autostop_mins is not None else []),
                *(["--den-auth"] if den_auth else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=daemon_environ(settings, extra_env),
        )
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConnectionError_(
                f"the daemon exited with code {proc.returncode} while starting on {host}:{port}. "
                f"Last lines of {log_path(settings, port)}:\n{_log_tail(settings, port)}"
            )
        if ping(host, port, timeout=0.5, tls=tls) and daemon_pid(settings, port) == proc.pid:
            options = {"host": host, "tls": tls, "autostop_mins": autostop_mins, "den_auth": den_auth}
            _write_private(folder / OPTIONS_FILE, json.dumps(options))
            return proc.pid
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    _terminate(proc.pid)
    raise ConnectionError_(
        f"the daemon did not answer on {host}:{port} within {timeout:.0f}s. "
        f"Last lines of {log_path(settings, port)}:\n{_log_tail(settings, port)}"
    )


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    try:
        proc = psutil.Process(pid)
        pgid = os.getpgid(pid)
    except (psutil.Error, ProcessLookupError):
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
    # Workers are the daemon's children in its process group (it leads its own session).
    if pgid == pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def stop_daemon(settings: Settings, port: int | None = None, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop our daemon on ``port`` (and its workers). False if none was running."""
    port = port or settings.port
    pid = daemon_pid(settings, port)
    if pid is None:
        return False
    _terminate(pid, timeout)
    pid_file = settings.daemon_dir(port) / "pid"
    if pid_file.exists():
        pid_file.unlink()
    return True
