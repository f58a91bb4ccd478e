"""Bringing up the daemon on a host over SSH, one named step at a time.

Steps: connect, find python (3.10+), venv (``~/.rh/venvs/py-<hash>``, with the system
site-packages visible so frameworks already on the host, such as CUDA builds, are reused),
install, start daemon (``runhouse start`` on the host, bound to 127.0.0.1 unless asked
otherwise) and token. Each step prints its progress; a failure raises
:class:`~runhouse.exceptions.SSHError` naming the step, the host and the output.

Install: the client's own runhouse goes up as a wheel named after its source version (see
:mod:`runhouse.compute.wheel`) and uv installs it with its dependencies from the host's package
index. uv is the host's (in the venv, on the PATH or in uv's installer folders) or, where the host
has none, brought into the venv with the host's pip. The host's index settings are kept: uv
follows its own, and pip's (``pip.conf``, ``PIP_INDEX_URL``) are passed on to it (see
:mod:`runhouse.compute.hostprobe`). Every installer line is shown as it comes; a silence of
:data:`QUIET_S` seconds is reported with the index being waited on, and the install gives up
after :data:`INSTALL_TIMEOUT_S` seconds, saying so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runhouse.compute import hostprobe
from runhouse.compute.ssh import SSHSession
from runhouse.compute.wheel import client_wheel
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
QUIET_S = 10.0  # an installer silent this long is reported, with what it waits on
INSTALL_TIMEOUT_S = 1800.0


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


@dataclass(frozen=True)
class HostFacts:
    """What the host has for the install (see :mod:`runhouse.compute.hostprobe`)."""

    home: str
    installed: str  # the wheel the venv holds ("" if none)
    uploaded: bool  # the wheel is already in ~/.rh/wheels
    uv: str  # "" if the host has none
    pip: bool
    uv_args: tuple[str, ...]
    uv_env: tuple[tuple[str, str], ...]
    index: str  # the index uv waits on, in words
    pip_index: str  # the index pip waits on

    @classmethod
    def parse(cls, text: str) -> HostFacts:
        data: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
        return cls(
            data["home"],
            data["installed"],
            data["uploaded"],
            data["uv"],
            data["pip"],
            tuple(data["uv_args"]),
            tuple(sorted(data["uv_env"].items())),
            data["index"],
            data["pip_index"],
        )


@functools.cache
def _probe_source() -> str:
    return Path(hostprobe.__file__).read_text()


def prepare(session: SSHSession, python: str, venv: str, wheel: str) -> HostFacts:
    """Make the venv if missing and learn what the host has for installing into it."""
    command = (
        f"mkdir -p {REMOTE_HOME}/wheels && (test -x {venv}/bin/python || "
        f"{shlex.quote(python)} -m venv --without-pip --system-site-packages {venv}) && "
        f"{venv}/bin/python -c {shlex.quote(_probe_source())} {venv} {shlex.quote(wheel)}"
    )
    out = _run(session, "venv", command)
    try:
        return HostFacts.parse(out)
    except (ValueError, KeyError, IndexError):
        raise SSHError(f"step 'venv' failed on {session.where}: unexpected output:\n{out[-2000:]}") from None


def install(session: SSHSession, python: str, cache: Path, progress: Progress) -> str:
    """Make the venv for ``python`` hold the client's runhouse (skipped when it already does).

    Returns the venv's path on the host."""
    venv = venv_for(python)
    wheel = client_wheel(cache)
    progress(f"preparing {venv} with {python}")
    facts = prepare(session, python, venv, wheel.name)
    session.remember_home(facts.home)
    if facts.installed == wheel.name:
        progress(f"{wheel.name} already installed in {venv}")
        return venv
    home_venv = facts.home + venv[1:]  # absolute: no "~" left to expand inside arguments
    target = f"{facts.home}/.rh/wheels/{wheel.name}"
    move = ""
    if not facts.uploaded:
        part = f"{facts.home}/.rh/wheels/.{wheel.name}.{secrets.token_hex(4)}.part"
        progress(f"uploading {wheel.name} ({wheel.stat().st_size // 1024} kB)")
        session.upload(wheel, part, step="upload wheel")
        move = f"mv -f {shlex.quote(part)} {shlex.quote(target)} && "  # whole or not at all
    uv = facts.uv or _bring_uv(session, home_venv, facts, progress)
    variables = " ".join(f"{k}={shlex.quote(v)}" for k, v in facts.uv_env)
    progress(
        f"installing {wheel.name} with uv ({uv}) from {facts.index}; "
        f"gives up after {INSTALL_TIMEOUT_S / 60:.0f} min"
    )
    _stream(
        session,
        "install",
        f"{move}env {variables} {shlex.quote(uv)} pip install --python {home_venv}/bin/python "
        f"{shlex.join(facts.uv_args)} {shlex.quote(target)} && echo {wheel.name} > {home_venv}/.rh_installed",
        "uv",
        facts.index,
        progress,
    )
    return venv


def _bring_uv(session: SSHSession, venv: str, facts: HostFacts, progress: Progress) -> str:
    """Install uv into the venv with the host's pip (its index settings apply); return its path."""
    steps = []
    if not facts.pip:
        progress("no uv and no pip on the host: adding pip to the venv (ensurepip)")
        steps.append(f"{venv}/bin/python -m ensurepip --default-pip")
    progress("no uv on the host: installing it into the venv with pip")
    steps.append(f"{venv}/bin/python -m pip install --disable-pip-version-check --progress-bar off uv")
    _stream(session, "install uv", " && ".join(steps), "pip", facts.pip_index, progress)
    return f"{venv}/bin/uv"


def _stream(session: SSHSession, step: str, command: str, tool: str, index: str, progress: Progress) -> None:
    """Run an installer on the host, its lines shown as progress, its silences explained."""

    def quiet(seconds: float) -> None:
        progress(
            f"still installing: no output from {tool} for {seconds:.0f} s; "
            f"it may be waiting on the package index ({index})"
        )

    done = session.stream(
        command,
        lambda line: progress(f"{tool}: {line}") if line.strip() else None,
        timeout=INSTALL_TIMEOUT_S,
        quiet_s=QUIET_S,
        on_quiet=quiet,
    )
    if done.exit_code is None:
        raise SSHError(
            f"step '{step}' failed on {session.where}: {tool} gave no result within "
            f"{INSTALL_TIMEOUT_S:.0f} s; the package index: {index}; its last output:\n"
            f"{done.tail[-3000:] or '(no output)'}"
        )
    if done.exit_code != 0:
        raise SSHError(
            f"step '{step}' failed on {session.where} (exit code {done.exit_code}; the package index: "
            f"{index}):\n{done.tail[-3000:] or '(no output)'}"
        )


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
        session.upload(local, f"{folder}/{name}", step="upload den identity")
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
