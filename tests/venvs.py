"""Virtual environments with runhouse installed the way users install it, for tests that must not
lean on this machine's Python or on the repo folder being importable.

::

    python = make_venv(tmp / "client")          # runhouse installed from a wheel of this checkout
    run_outside(python, "import runhouse as rh; ...", home=tmp / "home")

The wheel is built once per test session; uv installs it with its dependencies from the package
index (uv's cache makes later installs fast). Scripts run with a working directory outside the
repo and without PYTHONPATH, so only what the venv holds is importable.

For machines that must not reach the package index themselves (SSH test hosts), a package index
of runhouse's dependencies can be served over HTTP::

    root = package_index("3.11")                 # a PEP 503 folder per project, cached on disk
    with serve_index(root, bind="10.1.2.1") as url:   # http://10.1.2.1:PORT/
        ...                                      # point the host's pip.conf at url
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator, Sequence
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


# A static file server for a package index: HTTP/1.1 keep-alive and the Cache-Control PyPI sends
# (max-age=600), so a host with a warm cache revalidates nothing, as it would against PyPI.
_INDEX_SERVER = """
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def end_headers(self):
        self.send_header("Cache-Control", "max-age=600")
        super().end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], 0), functools.partial(Handler, directory=sys.argv[2]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _normalize(name: str) -> str:
    """A project's name as a simple index spells its folder (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def package_index(python_version: str, extra: Sequence[str] = ()) -> Path:
    """A simple index (PEP 503: a folder per project) holding, as wheels for CPython
    ``python_version`` on this platform, runhouse's dependencies and uv, but not runhouse itself
    (SSH hosts get that from the client). Downloaded with pip once per set of dependencies into
    this machine's cache folder (``~/.cache/runhouse-tests``). ``extra`` requirements (e.g.
    ``("ray>=2.56,<3",)``) go into the index too, with their dependencies."""
    from runhouse.compute.wheel import client_wheel

    ours = client_wheel(Path(tempfile.mkdtemp(prefix="rh-index-wheel-")))
    with zipfile.ZipFile(ours) as wheel:
        metadata = next(wheel.read(n) for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    requires = sorted(line for line in metadata.decode().splitlines() if line.startswith("Requires-Dist"))
    signature = "\n".join([python_version, sys.platform, *requires, *extra])
    key = hashlib.sha256(signature.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runhouse-tests"
    root = cache / f"index-{key}"
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    flat = building / "flat"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
         "--python-version", python_version, "-d", str(flat), str(ours), "uv", *extra],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(
            f"downloading the test package index failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    simple = building / "simple"
    for file in flat.iterdir():
        project = _normalize(file.name.split("-", 1)[0])
        if project != "runhouse":
            (simple / project).mkdir(parents=True, exist_ok=True)
            file.rename(simple / project / file.name)
    with contextlib.suppress(OSError):  # another session made it first
        simple.rename(root)
    shutil.rmtree(building, ignore_errors=True)
    return root


@contextlib.contextmanager
def serve_index(root: Path, bind: str) -> Iterator[str]:
    """Serve ``root`` over HTTP on ``bind`` (a free port) while in the block; yields its URL."""
    server = subprocess.Popen(
        [sys.executable, "-c", _INDEX_SERVER, bind, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the package index server did not start on {bind} (exit {server.poll()})")
        yield f"http://{bind}:{port}/"
    finally:
        server.terminate()
        server.wait(10)
