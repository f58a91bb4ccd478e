"""The client's own runhouse as a wheel, for SSH hosts to install.

The wheel is written here, in-process, from the package this process imports: its source tree for
a development install, its folder in site-packages for a normal one. No build backend runs and
nothing is downloaded. The metadata (dependencies, entry points) comes from the source tree's
``pyproject.toml`` when there is one, else from the installed distribution that sits beside the
package. The version gets a local label made from a hash of every file and the metadata
(``0.1.0+h1a2b3c4d5e6f``), so two checkouts, or two edits of one, give wheels of different names:
they never overwrite each other on a host, and a host already holding that exact wheel is left
alone. Dependencies are not bundled; the host installs them from its own package index.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from runhouse._version import __version__
from runhouse.exceptions import SSHError

PACKAGE = "runhouse"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the same files make the same bytes


@dataclass(frozen=True)
class _Metadata:
    requires_python: str
    requires: tuple[str, ...]  # Requires-Dist lines, extras included with their markers
    extras: tuple[str, ...]
    entry_points: str  # entry_points.txt text


def client_wheel(cache: Path) -> Path:
    """The wheel of this process's runhouse, built into ``cache`` once per source version."""
    files = package_files()
    meta = _metadata()
    digest = hashlib.sha256(repr(meta).encode())
    for relative, path in files:
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    version = local_version(__version__, digest.hexdigest()[:12])
    target = cache / f"{PACKAGE}-{version}-py3-none-any.whl"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=cache, prefix=".building-", suffix=".whl")
        os.close(fd)
        try:
            _write(Path(partial), version, files, meta)
            os.replace(partial, target)  # atomic: a concurrent builder writes the same bytes
        finally:
            Path(partial).unlink(missing_ok=True)
    return target


def local_version(version: str, digest: str) -> str:
    """``version`` with a local label naming the source (PEP 440: ``+`` once, then ``.``)."""
    return f"{version}{'.' if '+' in version else '+'}h{digest}"


def package_files() -> list[tuple[str, Path]]:
    """(path in the wheel, file) for every file of the package, caches and hidden files left out."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*")):
        relative = path.relative_to(PACKAGE_DIR.parent)
        if (
            path.is_file()
            and "__pycache__" not in relative.parts
            and path.suffix not in (".pyc", ".pyo")
            and not any(part.startswith(".") for part in relative.parts)
        ):
            found.append((relative.as_posix(), path))
    return found


def source_root() -> Path | None:
    """The source tree of a development install (the folder holding pyproject.toml), else None."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and "site-packages" not in PACKAGE_DIR.parts:
        return root
    return None


def _metadata() -> _Metadata:
    root = source_root()
    if root is None:
        return _from_distribution(beside=True)
    if sys.version_info >= (3, 11):
        return _from_pyproject(root / "pyproject.toml")
    return _from_distribution(beside=False)  # 3.10 reads no TOML: the editable install's metadata


def _from_pyproject(pyproject: Path) -> _Metadata:
    import tomllib  # 3.11+; only a development install on 3.11+ comes here

    project = tomllib.loads(pyproject.read_text())["project"]
    requires = list(project.get("dependencies", []))
    extras = project.get("optional-dependencies", {})
    for extra, specs in extras.items():
        for spec in specs:
            requirement, _, marker = spec.partition(";")
            condition = f'({marker.strip()}) and extra == "{extra}"' if marker else f'extra == "{extra}"'
            requires.append(f"{requirement.strip()}; {condition}")
    scripts = project.get("scripts", {})
    entry_points = "".join(f"{name} = {target}\n" for name, target in scripts.items())
    return _Metadata(
        project.get("requires-python", ""),
        tuple(requires),
        tuple(extras),
        f"[console_scripts]\n{entry_points}" if entry_points else "",
    )


def _from_distribution(beside: bool) -> _Metadata:
    """The installed distribution's metadata: the one ``beside`` the package in site-packages (the
    copy this process runs), or else the first on ``sys.path``."""
    found = []
    if beside:
        found = list(importlib.metadata.Distribution.discover(name=PACKAGE, path=[str(PACKAGE_DIR.parent)]))
    if not found:
        try:
            found = [importlib.metadata.distribution(PACKAGE)]
        except importlib.metadata.PackageNotFoundError:
            raise SSHError(
                f"step 'install' failed locally: {PACKAGE_DIR} has no installed metadata to build a wheel "
                "for the host from; install runhouse (pip install runhouse, or pip install -e . in a checkout)"
            ) from None
    meta = found[0].metadata
    return _Metadata(
        (meta.get_all("Requires-Python") or [""])[0],
        tuple(meta.get_all("Requires-Dist") or ()),
        tuple(meta.get_all("Provides-Extra") or ()),
        found[0].read_text("entry_points.txt") or "",
    )


def _write(path: Path, version: str, files: list[tuple[str, Path]], meta: _Metadata) -> None:
    info = f"{PACKAGE}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {PACKAGE}",
        f"Version: {version}",
        "Summary: runhouse, as installed on the client that sent it",
    ]
    if meta.requires_python:
        metadata.append(f"Requires-Python: {meta.requires_python}")
    metadata += [f"Provides-Extra: {extra}" for extra in meta.extras]
    metadata += [f"Requires-Dist: {spec}" for spec in meta.requires]
    generated = {
        f"{info}/METADATA": "\n".join(metadata) + "\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: runhouse\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if meta.entry_points:
        generated[f"{info}/entry_points.txt"] = meta.entry_points
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        entries = [(name, file.read_bytes()) for name, file in files]
        entries += [(name, text.encode()) for name, text in generated.items()]
        for name, data in entries:
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
            hashed = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={hashed},{len(data)}")
        record.append(f"{info}/RECORD,,")
        entry = zipfile.ZipInfo(f"{info}/RECORD", _EPOCH)
        entry.external_attr = 0o644 << 16
        wheel.writestr(entry, "\n".join(record) + "\n", zipfile.ZIP_DEFLATED)
