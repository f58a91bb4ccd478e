"""Sending a folder of code to a cluster, only what changed since the last time.

The folder's files (minus what ``.gitignore`` files exclude, ``.git`` and bytecode caches) are
listed with their size and modification time; the daemon answers which ones it lacks, and just
those travel, in one tar archive.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pathspec

from runhouse.exceptions import ConfigError

if TYPE_CHECKING:
    from runhouse.client.daemon_client import DaemonClient

ALWAYS_SKIPPED = (".git/", "__pycache__/", "*.pyc", ".rh_manifest.json", ".mypy_cache/", ".pytest_cache/")
MAX_FILES = 20_000
MAX_BYTES = 512 * 2**20


def check_syncable(folder: Path) -> Path:
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"cannot sync {folder}: it is not a directory")
    if folder == Path.home().resolve() or folder == Path(folder.anchor):
        raise ConfigError(
            f"refusing to sync {folder}: it is your home or the root directory. Put your code in a "
            "project folder and pass that as working_dir"
        )
    return folder


def _ignore_spec(folder: Path, here: Path) -> pathspec.PathSpec | None:
    gitignore = here / ".gitignore"
    if not gitignore.is_file():
        return None
    return pathspec.GitIgnoreSpec.from_lines(gitignore.read_text(errors="replace").splitlines())


def manifest(folder: Path) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of the files to sync."""
    folder = check_syncable(folder)
    base = pathspec.GitIgnoreSpec.from_lines(ALWAYS_SKIPPED)
    specs: list[tuple[Path, pathspec.PathSpec]] = []
    files: dict[str, list[int]] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        spec = _ignore_spec(folder, here)
        if spec is not None:
            specs.append((here, spec))

        def ignored(path: Path, is_dir: bool) -> bool:
            rel = path.relative_to(folder).as_posix() + ("/" if is_dir else "")
            if base.match_file(rel):
                return True
            for root, s in specs:
                if root == path or root not in path.parents:
                    continue
                if s.match_file(path.relative_to(root).as_posix() + ("/" if is_dir else "")):
                    return True
            return False

        dirnames[:] = [d for d in dirnames if not ignored(here / d, True)]
        for name in filenames:
            path = here / name
            if path.is_symlink() or not path.is_file() or ignored(path, False):
                continue
            st = path.stat()
            files[path.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns]
            total += st.st_size
            if len(files) > MAX_FILES or total > MAX_BYTES:
                raise ConfigError(
                    f"{folder} holds more than {MAX_FILES} files or {MAX_BYTES // 2**20} MB to sync; "
                    "add a .gitignore for data and build outputs, or pick a smaller working_dir"
                )
    return files


def pack(folder: Path, paths: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:
        for rel in paths:
            tar.add(str(folder / rel), arcname=rel, recursive=False)
    return buffer.getvalue()


def folder_name(folder: Path) -> str:
    """A name for the folder on the cluster: readable, and distinct per client path."""
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in folder.name)[:40] or "root"
    return f"{safe.lstrip('.') or 'dir'}-{digest}"


def sync_folder(client: DaemonClient, folder: Path) -> dict[str, Any]:
    """Bring the cluster's copy of ``folder`` up to date; return where it lives and what moved."""
    folder = check_syncable(folder)
    files = manifest(folder)
    name = folder_name(folder)
    plan = client.request_json("POST", "/folder/sync", {"name": name, "manifest": files})
    if not plan["need"]:
        return {"dest": plan["dest"], "written": 0, "deleted": 0}
    return client.upload_folder(name, files, pack(folder, plan["need"]))
