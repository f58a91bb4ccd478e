"""Bringing up the daemon on a host over SSH, one named step at a time.

Steps: connect, find python (3.10+), venv (``~/.rh/venv``, with the system site-packages visible
so frameworks already on the host, such as CUDA builds, are reused), install (this package at
the client's version: a wheel built from the client's own source when it is a development
install, else the same version from the package index), start daemon (``runhouse start`` on the
host, bound to 127.0.0.1 unless asked otherwise) and token. Each step prints its progress; a
failure raises :class:`~runhouse.exceptions.SSHError` naming the step, the host and the output.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import runhouse
from runhouse._version import __version__
from runhouse.compute.ssh import SSHSession
from runhouse.exceptions import SSHError

REMOTE_HOME = "~/.rh"


def venv_for(python: str) -> str:
    """Each host interpreter gets its own venv, so clusters asking for different ones coexist."""
    return f"{REMOTE_HOME}/venvs/py-{hashlib.sha256(python.encode()).hexdigest()[:10]}"


FIND_PYTHON = (
    "for p in python3.13 python3.12 python3.11 python3.10 python3; do "
    "if command -v $p >/dev/null 2>&1 && $p -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; "
    "then command -v $p; exit 0; fi; done; exit 3"
)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DaemonOptions:
    port: int
    bind: str = "127.0.0.1"
    tls: bool = False
    autostop_mins: float | None = None
    env_vars: tuple[tuple[str, str], ...] = ()
    den_identity: str | None = None  # den.json for a den_auth daemon (Den URL, cluster, daemon token)


def _fail(session: SSHSession, step: str, rc: int, out: str, err: str) -> SSHError:
    output = (out + err).strip()[-3000:] or "(no output)"
    return SSHError(f"step '{step}' failed on {session.where} (exit code {rc}):\n{output}")


def _run(session: SSHSession, step: str, command: str, timeout: float = 600) -> str:
    rc, out, err = session.run(command, timeout=timeout, step=step)
    if rc != 0:
        raise _fail(session, step, rc, out, err)
    return out.strip()


def find_python(session: SSHSession, python: str | None) -> str:
    if python:
        rc, out, err = session.run(
            f"{shlex.quote(python)} -c 'import sys; print(sys.version_info >= (3, 10))'", step="find python"
        )
        if rc != 0 or out.strip() != "True":
            raise SSHError(
                f"step 'find python' failed on {session.where}: {python} is not a Python 3.10+ there "
                f"({(out + err).strip()[-500:] or 'no output'})"
            )
        return python
    rc, out, err = session.run(FIND_PYTHON, step="find python")
    if rc != 0 or not out.strip():
        raise SSHError(
            f"step 'find python' failed on {session.where}: no Python 3.10 or newer on the PATH; "
            "install one (e.g. apt-get install python3 python3-venv) or pass python='/path/to/python3'"
        )
    return out.strip().splitlines()[-1]


def source_dir() -> Path | None:
    """The source tree of a development install of runhouse, or None when installed normally."""
    package = Path(runhouse.__file__).resolve().parent
    root = package.parent
    if (root / "pyproject.toml").is_file() and "site-packages" not in package.parts:
        return root
    return None


def local_wheel(cache: Path) -> Path:
    """A wheel of the client's runhouse source, built once per source version."""
    root = source_dir()
    assert root is not None
    digest = hashlib.sha256()
    for path in sorted([root / "pyproject.toml", *(root / "runhouse").rglob("*.py")]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    folder = cache / f"{__version__}-{digest.hexdigest()[:16]}"
    wheels = sorted(folder.glob("runhouse-*.whl")) if folder.exists() else []
    if wheels:
        return wheels[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(root)]
    # Without build isolation when this environment can build wheels itself (no download needed).
    built = subprocess.run([*command, "--no-build-isolation"], capture_output=True, text=True)
    if built.returncode != 0:
        built = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("runhouse-*.whl"))
    if built.returncode != 0 or not wheels:
        raise SSHError(
            f"step 'install' failed locally: could not build a wheel of {root}:\n{built.stderr[-2000:]}"
        )
    return wheels[0]


def install(session: SSHSession, python: str, cache: Path, progress: Progress) -> str:
    """Make the venv for ``python`` hold this runhouse version (skipped when it already does).

    Returns the venv's path on the host."""
    VENV = venv_for(python)
    root = source_dir()
    wheel = local_wheel(cache) if root is not None else None
    marker = wheel.parent.name if wheel is not None else __version__
    rc, out, _ = session.run(f"cat {VENV}/.rh_installed 2>/dev/null", step="install")
    if rc == 0 and out.strip() == marker:
        progress(f"runhouse {__version__} already installed in {VENV}")
        return VENV
    progress(f"creating {VENV} with {python}")
    _run(
        session,
        "venv",
        f"mkdir -p {REMOTE_HOME}/wheels && (test -x {VENV}/bin/python || "
        f"{shlex.quote(python)} -m venv --system-site-packages {VENV})",
    )
    if wheel is not None:
        remote = f"{REMOTE_HOME}/wheels/{wheel.name}"
        session.upload(wheel, remote.replace("~/", "", 1), step="install")
        target = f'"$HOME/{remote[2:]}"'
        progress(f"installing {wheel.name} (from this machine's source) and its dependencies")
        _run(
            session,
            "install",
            f"{VENV}/bin/python -m pip install -q --disable-pip-version-check {target} && "
            f"{VENV}/bin/python -m pip install -q --disable-pip-version-check --no-deps "
            f"--force-reinstall {target}",
            timeout=1800,
        )
    else:
        progress(f"installing runhouse=={__version__} from the package index")
        _run(
            session,
            "install",
            f"{VENV}/bin/python -m pip install -q --disable-pip-version-check runhouse=={__version__}",
            timeout=1800,
        )
    _run(session, "install", f"echo {marker} > {VENV}/.rh_installed")
    return VENV


def start_daemon(session: SSHSession, venv: str, options: DaemonOptions, progress: Progress) -> None:
    progress(
        f"starting the daemon on 127.0.0.1:{options.port}"
        if options.bind == "127.0.0.1"
        else f"starting the daemon on {options.bind}:{options.port}"
    )
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in options.env_vars)
    flags = f"--port {options.port} --host {options.bind}"
    if options.tls:
        flags += " --tls"
    if options.autostop_mins is not None:
        flags += f" --autostop-mins {options.autostop_mins}"
    folder = f"{REMOTE_HOME}/daemons/{options.port}"
    if options.den_identity is not None:
        flags += " --den-auth"
        _put_private(session, options.den_identity, folder, "den.json")
    _run(
        session,
        "start daemon",
        f"mkdir -p {folder} && echo {venv}/bin/python > {folder}/python && "
        f"{env} {venv}/bin/python -m runhouse.cli start {flags}",
        timeout=120,
    )


def _put_private(session: SSHSession, text: str, folder: str, name: str) -> None:
    """Copy ``text`` to ``folder/name`` on the host, readable by its owner only (never on a command line)."""
    _run(session, "prepare daemon folder", f"mkdir -p -m 700 {folder} && rm -f {folder}/{name}")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        fd = os.open(local, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        relative = folder[2:] if folder.startswith("~/") else folder  # SFTP paths start at the home folder
        session.upload(local, f"{relative}/{name}", step="upload den identity")
    _run(session, "protect den identity", f"chmod 600 {folder}/{name}")


def stop_daemon(session: SSHSession, port: int) -> None:
    """Stop the daemon on ``port`` with the interpreter that started it (nothing if none did)."""
    python = f"$(cat {REMOTE_HOME}/daemons/{port}/python 2>/dev/null)"
    _run(
        session,
        "stop daemon",
        f'py={python}; if [ -n "$py" ] && [ -x "$py" ]; then $py -m runhouse.cli stop --port {port}; fi',
        timeout=60,
    )


def daemon_secret(session: SSHSession, port: int, name: str) -> str:
    """A file from the daemon's private folder on the host (its token or TLS certificate)."""
    return _run(session, "token", f"cat {REMOTE_HOME}/daemons/{port}/{name}")


def timed(progress: Progress) -> Callable[[str], None]:
    start = time.monotonic()

    def report(message: str) -> None:
        progress(f"{message} [{time.monotonic() - start:.1f}s]")

    return report
