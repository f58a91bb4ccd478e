"""Starting and stopping every server under test. Processes are stopped by pid, never by name.

* :class:`Daemon`: our daemon, started with the ``runhouse start`` CLI under its own ``RH_HOME``.
* :class:`Service`: a baseline server (plain ``uvicorn`` for FastAPI, ``gunicorn`` for Flask)
  started as a subprocess of this process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.rawhttp import RawHTTPClient, check_call

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_procs(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    """SIGTERM each process still alive, wait, then SIGKILL the ones that did not exit.

    ``psutil.Process`` objects remember their start time, so a pid reused by an unrelated process
    since we recorded it is never signalled.
    """
    signalled = []
    for proc in procs:
        try:
            if proc.is_running():
                proc.send_signal(signal.SIGTERM)
                signalled.append(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(signalled, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


def _tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants that are alive now."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def wait_ready(
    port: int,
    headers: dict[str, str] | None = None,
    timeout: float = READY_TIMEOUT_S,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until ``POST /add/call`` on ``port`` returns ``3``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with code {proc.returncode} while starting")
        client = RawHTTPClient(port, headers=headers, timeout=2.0)
        try:
            check_call(client)
            return
        except (OSError, EOFError, RuntimeError) as e:
            last = e
            time.sleep(0.05)
        finally:
            client.close()
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f}s: {last}")


@dataclass
class Service:
    """A baseline server running as our subprocess (its workers are its children)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def pids(self) -> list[int]:
        return [p.pid for p in _tree(self.proc.pid)]

    def stop(self) -> None:
        _stop_procs(_tree(self.proc.pid))  # children are collected before the parent goes
        self.proc.wait(timeout=10)


def _spawn(name: str, argv: list[str], port: int, log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    service = Service(name, port, proc, log_path)
    try:
        wait_ready(port, proc=proc)
    except BaseException:
        service.stop()
        raise
    return service


def start_fastapi(port: int, log_dir: Path) -> Service:
    """FastAPI under plain ``uvicorn app --host --port``: one process, uvicorn's defaults."""
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baselines.fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return _spawn("fastapi_uvicorn", argv, port, log_dir)


def gunicorn_workers() -> int:
    """gunicorn's documented recommendation: (2 x cores) + 1."""
    return 2 * (os.cpu_count() or 1) + 1


def start_gunicorn(port: int, log_dir: Path) -> Service:
    """Flask under gunicorn with the recommended number of sync workers."""
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(gunicorn_workers()),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "bench.baselines.flask_app:app",
    ]
    return _spawn("flask_gunicorn", argv, port, log_dir)


def runhouse_cli() -> list[str]:
    """The ``runhouse`` console script of the interpreter running the benchmark."""
    beside = Path(sys.executable).parent / "runhouse"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("runhouse")
    if found is None:
        raise RuntimeError("the `runhouse` CLI is not installed (pip install -e .)")
    return [found]


@dataclass
class Daemon:
    """Our daemon on ``port`` with state in ``home`` (a fresh ``RH_HOME``)."""

    home: Path
    port: int
    known: dict[int, psutil.Process] = field(default_factory=dict)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, RH_HOME=str(self.home))
        return subprocess.run(
            [*runhouse_cli(), *args, "--port", str(self.port)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    @classmethod
    def start(cls, home: Path, port: int) -> Daemon:
        """``runhouse start --port P`` (returns once the daemon answers ``/check``)."""
        daemon = cls(home, port)
        done = daemon.cli("start")
        if done.returncode != 0:
            raise RuntimeError(f"`runhouse start` failed ({done.returncode}): {done.stdout}{done.stderr}")
        daemon.remember()
        return daemon

    @property
    def daemon_dir(self) -> Path:
        return self.home / "daemons" / str(self.port)

    @property
    def token(self) -> str:
        return (self.daemon_dir / "token").read_text().strip()

    @property
    def pid(self) -> int:
        return int((self.daemon_dir / "pid").read_text().strip())

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def worker_pids(self) -> list[int]:
        """The daemon's worker processes (its children)."""
        try:
            return [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        except psutil.Error:
            return []

    def wait_for_worker(self, timeout: float = READY_TIMEOUT_S) -> int:
        """Wait until the default worker process exists and the daemon reports it alive."""
        cluster = self.cluster()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = [w for w in cluster.status().get("workers", []) if w.get("alive")]
            if workers:
                self.remember()
                return int(workers[0]["pid"])
            time.sleep(0.05)
        raise RuntimeError(f"the default worker of the daemon on port {self.port} did not start")

    def cluster(self) -> Any:
        """An ``rh.Cluster`` handle for this daemon (settings from this daemon's ``RH_HOME``)."""
        import runhouse as rh
        from runhouse.settings import load_settings

        return rh.Cluster(
            name=f"bench-{self.port}",
            host="localhost",
            server_port=self.port,
            server_connection_type="none",
            settings=load_settings({"RH_HOME": str(self.home)}),
        )

    def remember(self) -> None:
        """Record the daemon and its workers as they are now, to be sure they are gone at the end."""
        with contextlib.suppress(OSError, ValueError):
            for proc in _tree(self.pid):
                self.known.setdefault(proc.pid, proc)

    def stop(self) -> None:
        """``runhouse stop``, then make sure every process this daemon ever had is gone."""
        self.remember()
        self.cli("stop")
        _stop_procs(list(self.known.values()))
