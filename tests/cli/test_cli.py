"""The runhouse command line, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import free_port


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
