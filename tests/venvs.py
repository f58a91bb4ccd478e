"""Virtual environments with runhouse installed the way users install it, for tests that must not
lean on this machine's Python or on the repo folder being importable.

::

    python = make_venv(tmp / "client")          # runhouse installed from a wheel of this checkout
    run_outside(python, "import runhouse as rh; ...", home=tmp / "home")

The wheel is built once per test session; uv installs it with its dependencies from the package
index (uv's cache makes later installs fast). Scripts run with a working directory outside the
repo and without PYTHONPATH, so only what the venv holds is importable.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def uv() -> str:
    """uv, from this interpreter's scripts or PATH (installed with the dev extras)."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise RuntimeError("uv is missing: install the dev extras (pip install -e '.[dev]')")
    return found


@functools.cache
def wheel() -> Path:
    """A wheel of this checkout (built once per session)."""
    out = Path(tempfile.mkdtemp(prefix="rh-wheel-"))
    subprocess.run(
        [uv(), "build", "--wheel", "--out-dir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("runhouse-*.whl")
    return built


def make_venv(path: Path, extras: str = "") -> Path:
    """A venv at ``path`` with runhouse (``runhouse[extras]``) installed from :func:`wheel`;
    returns its python."""
    if not (path / "bin" / "python").exists():
        subprocess.run([uv(), "venv", "--python", sys.executable, str(path)], check=True, capture_output=True)
    python = path / "bin" / "python"
    target = f"runhouse[{extras}] @ {wheel().as_uri()}" if extras else str(wheel())
    proc = subprocess.run(
        [uv(), "pip", "install", "--python", str(python), target],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"installing runhouse into {path} failed:\n{proc.stdout}{proc.stderr}")
    return python


def clean_environ(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a user's process: ours without PYTHONPATH or runhouse settings."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RH_")}
    env.update(RH_HOME=str(home), **extra)
    return env


def run_outside(
    python: Path, code: str, home: Path, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``python`` in a folder outside the repo, as a user's script would run."""
    cwd = Path(tempfile.mkdtemp(prefix="rh-user-"))
    script = cwd / "user_script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [str(python), str(script)],
        cwd=cwd,
        env=clean_environ(home, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
