"""The runhouse command line, run as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import user_funcs
from conftest import free_port

import runhouse as rh


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runhouse.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, COLUMNS="200"),
    )


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("start", "stop", "restart", "status"):
        assert command in out.stdout


def test_start_status_restart_stop(rh_home):
    port = str(free_port())
    started = run_cli("start", "--port", port)
    assert started.returncode == 0, started.stderr
    assert f"127.0.0.1:{port}" in started.stdout
    status = run_cli("status", "--port", port)
    assert status.returncode == 0, status.stderr
    assert "default_env" in status.stdout and "pid" in status.stdout and "RSS" in status.stdout
    pid_line = status.stdout.splitlines()[0]
    restarted = run_cli("restart", "--port", port)
    assert restarted.returncode == 0 and "Daemon running" in restarted.stdout
    assert run_cli("status", "--port", port).stdout.splitlines()[0] != pid_line
    stopped = run_cli("stop", "--port", port)
    assert "Stopped" in stopped.stdout
    after = run_cli("status", "--port", port)
    assert after.returncode == 1 and "No daemon" in after.stdout


def test_start_reports_a_port_in_use(rh_home):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = str(squatter.getsockname()[1])
        out = run_cli("start", "--port", port)
    assert out.returncode == 1
    assert "Could not start the daemon" in out.stderr and "exited" in out.stderr


def test_restart_keeps_the_options_the_daemon_was_started_with(rh_home):
    from runhouse.compute import local
    from runhouse.settings import load_settings

    port = free_port()
    assert run_cli("start", "--port", str(port), "--tls", "--autostop-mins", "30").returncode == 0
    try:
        restarted = run_cli("restart", "--port", str(port))
        assert restarted.returncode == 0, restarted.stderr
        assert local.ping("127.0.0.1", port, tls=True) is not None  # still HTTPS after the restart
        assert local.start_options(load_settings(), port)["autostop_mins"] == 30
    finally:
        run_cli("stop", "--port", str(port))


def _attach(port: int) -> Any:
    """A client of the daemon the CLI started on ``port`` (``up()`` finds it running)."""
    return rh.cluster(
        name=f"cli-{port}", host="localhost", server_connection_type="none", server_port=port
    ).up()


def _daemon_log(port: int) -> str:
    from runhouse.compute import local
    from runhouse.settings import load_settings

    return local.log_path(load_settings(), port).read_text(errors="replace")


def test_help_shows_no_type_after_flags():
    for command in (["start"], ["restart"], ["den", "start"], []):
        out = run_cli(*command, "--help")
        assert out.returncode == 0, out.stderr
        assert "<bool>" not in out.stdout and "BOOLEAN" not in out.stdout, out.stdout
    help_text = run_cli("start", "--help").stdout
    tls_line = next(line for line in help_text.splitlines() if "--tls" in line)
    assert tls_line.split("--tls", 1)[1].split()[0] == "Serve", tls_line  # the help text comes next
    assert "<int>" in help_text  # options that take a value still say what kind


def test_status_counts_calls_in_words(rh_home):
    port = free_port()
    assert run_cli("start", "--port", str(port)).returncode == 0
    try:
        assert ", 0 calls served," in run_cli("status", "--port", str(port)).stdout
        add = rh.function(user_funcs.add).to(_attach(port))
        assert add(1, 2) == 3
        assert ", 1 call served," in run_cli("status", "--port", str(port)).stdout
        assert add(2, 2) == 4
        assert ", 2 calls served," in run_cli("status", "--port", str(port)).stdout
    finally:
        run_cli("stop", "--port", str(port))


def test_a_second_start_says_the_daemon_was_already_running(rh_home):
    from runhouse.compute import local
    from runhouse.settings import load_settings

    port = free_port()
    first = run_cli("start", "--port", str(port), "--tls")
    assert first.returncode == 0, first.stderr
    try:
        pid = local.daemon_pid(load_settings(), port)
        again = run_cli("start", "--port", str(port))  # without --tls: still found, over HTTPS
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout, again.stdout
        assert f"127.0.0.1:{port}" in again.stdout and f"pid {pid}" in again.stdout
        assert "Daemon running" not in again.stdout
        assert local.daemon_pid(load_settings(), port) == pid
        assert run_cli("status", "--port", str(port)).returncode == 0  # status reads a TLS daemon too
    finally:
        run_cli("stop", "--port", str(port))


def test_restart_warns_that_objects_are_lost(rh_home):
    port = free_port()
    assert run_cli("start", "--port", str(port)).returncode == 0
    try:
        rh.function(user_funcs.add, name="adder").to(_attach(port))
        restarted = run_cli("restart", "--port", str(port))
        assert restarted.returncode == 0, restarted.stderr
        assert "Warning" in restarted.stderr and "lost" in restarted.stderr, restarted.stderr
        assert "adder" in restarted.stderr  # names what goes
        assert "Daemon running" in restarted.stdout
    finally:
        run_cli("stop", "--port", str(port))
    not_running = run_cli("restart", "--port", str(port))  # nothing to lose: no warning
    try:
        assert not_running.returncode == 0 and "Warning" not in not_running.stderr
    finally:
        run_cli("stop", "--port", str(port))


def test_a_normal_stop_logs_no_warning_about_lost_objects(rh_home):
    """A worker that dies loses its objects: a WARNING. A stop drops them as asked: no WARNING."""
    port = free_port()
    assert run_cli("start", "--port", str(port)).returncode == 0
    try:
        cluster = _attach(port)
        pid = rh.function(user_funcs.getpid, name="doomed").to(cluster)()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "objects lost" not in _daemon_log(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rh.function(user_funcs.add, name="kept").to(cluster)(2, 3) == 5
    finally:
        assert "Stopped" in run_cli("stop", "--port", str(port)).stdout
    warnings = [line for line in _daemon_log(port).splitlines() if "WARNING" in line]
    assert any("objects lost" in line and "doomed" in line for line in warnings), warnings
    assert not any("kept" in line for line in warnings), warnings


def test_den_commands_without_the_den_extra_say_how_to_install_it(tmp_path):
    """With Den's server libraries missing (as after `pip install runhouse`), the commands that
    need them stop with the install hint, and `den stop` still works."""
    hide = "import sys\nfor m in ('fastapi', 'sqlalchemy', 'alembic', 'psycopg'): sys.modules[m] = None\n"
    code = hide + "from runhouse.cli import main\nmain()\n"
    for args in (
        ["den", "start", "--data-dir", str(tmp_path)],
        ["den", "start", "--foreground", "--data-dir", str(tmp_path)],
        ["den", "user", "add", "alice", "--data-dir", str(tmp_path)],
        ["den", "usage", "--data-dir", str(tmp_path)],
    ):
        out = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, COLUMNS="200"),
        )
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert 'pip install "runhouse[den]"' in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    stop = subprocess.run(
        [sys.executable, "-c", code, "den", "stop", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0 and "No Den of ours" in stop.stdout, stop.stderr
