"""Code folders synced from clients: each lives under ``<daemon dir>/code/<name>``.

A client sends a manifest (``{relative path: [size, mtime_ns]}``) of its folder; the store answers
which files differ from the manifest it kept from the last sync, the client sends just those in a
tar, and the store writes them and removes files the client no longer has. Archive members are
checked so nothing is written outside the folder (no absolute paths, ``..``, links or devices).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from runhouse.exceptions import BadRequest

MANIFEST = ".rh_manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_rel(rel: str) -> str:
    """A relative path that stays inside its folder (no absolute paths, no '..')."""
    path = PurePosixPath(rel)
    if (
        path.is_absolute()
        or ".." in path.parts
        or not path.parts
        or rel == MANIFEST
        or "\0" in rel
        or len(rel) > 4096
        or any(len(part) > 255 for part in path.parts)
    ):
        raise BadRequest(f"path {rel!r} in a folder sync must be relative and stay inside the folder", 400)
    return str(path)


def check_manifest(manifest: Any) -> dict[str, list[int]]:
    if not isinstance(manifest, dict):
        raise BadRequest("'manifest' must map relative paths to [size, mtime_ns]", 400)
    out: dict[str, list[int]] = {}
    for rel, stamp in manifest.items():
        if not (isinstance(stamp, list) and len(stamp) == 2 and all(isinstance(v, int) for v in stamp)):
            raise BadRequest(f"manifest entry for {rel!r} must be [size, mtime_ns]", 400)
        out[check_rel(str(rel))] = stamp
    return out


class FolderStore:
    def __init__(self, base: Path) -> None:
        self.base = base

    def path(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadRequest(f"folder name {name!r} must be letters, digits, '-', '_' or '.'", 400)
        return self.base / name

    def _stored(self, folder: Path) -> dict[str, list[int]]:
        try:
            return json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}

    def plan(self, name: str, manifest: dict[str, list[int]]) -> dict[str, Any]:
        """Which files of ``manifest`` the folder lacks or holds in another version."""
        folder = self.path(name)
        stored = self._stored(folder)
        need = [
            rel for rel, stamp in manifest.items() if stored.get(rel) != stamp or not (folder / rel).is_file()
        ]
        return {"dest": str(folder), "need": sorted(need)}

    def apply(self, name: str, manifest: dict[str, list[int]], archive: bytes) -> dict[str, Any]:
        """Write the archive's files into the folder. Every member is checked, and every file
        written to a temporary name, before any file of the folder is replaced: a bad archive
        changes nothing."""
        folder = self.path(name)
        _check_no_clash(manifest)
        parts: list[tuple[Path, Path]] = []
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
                members = tar.getmembers()
                for member in members:
                    rel = check_rel(member.name)
                    if not member.isfile():
                        raise BadRequest(f"folder sync archive member {rel!r} is not a regular file", 400)
                    if rel not in manifest:
                        raise BadRequest(f"archive member {rel!r} is not in the manifest", 400)
                    _check_target(folder, rel)
                folder.mkdir(parents=True, exist_ok=True)
                for member in members:
                    source = tar.extractfile(member)
                    assert source is not None
                    target = folder / check_rel(member.name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(target.name + ".rh-part")
                    parts.append((tmp, target))
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, EOFError) as e:
            for tmp, _ in parts:
                tmp.unlink(missing_ok=True)
            raise BadRequest(
                f"folder upload is not a readable (uncompressed) tar archive: {e}", 400
            ) from None
        except BaseException:
            for tmp, _ in parts:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, target in parts:
            tmp.replace(target)  # atomic: a worker importing meanwhile sees old or new, never half
        written = len(parts)
        deleted = 0
        for rel in set(self._stored(folder)) - set(manifest):
            stale = folder / rel
            if stale.is_file():
                stale.unlink()
                deleted += 1
        (folder / MANIFEST).write_text(json.dumps(manifest))
        return {"dest": str(folder), "written": written, "deleted": deleted}


def _check_no_clash(manifest: dict[str, list[int]]) -> None:
    """A manifest cannot hold a file and, under the same name, a folder with files in it."""
    for rel in manifest:
        parent = PurePosixPath(rel).parent
        while parent != PurePosixPath("."):
            if str(parent) in manifest:
                raise BadRequest(
                    f"manifest holds {str(parent)!r} both as a file and as a folder of {rel!r}", 400
                )
            parent = parent.parent


def _check_target(folder: Path, rel: str) -> None:
    """Writing ``rel`` must not need a folder where the cluster holds a file, or the reverse."""
    target = folder / rel
    if target.is_dir():
        raise BadRequest(f"{rel!r} is a folder on the cluster; the upload has a file there", 409)
    for parent in target.relative_to(folder).parents:
        path = folder / parent
        if str(parent) != "." and path.exists() and not path.is_dir():
            raise BadRequest(
                f"{str(parent)!r} is a file on the cluster; the upload needs a folder there", 409
            )
