"""The original system's file routes: ``POST /folder/method/{ls,mkdir,get,put,rm,mv,exists}``.

Bodies are the original's (``{"path", ...}``; see each handler). Paths name files on the cluster:
``~/x`` and relative paths are under the home folder of the user the daemon runs as; absolute paths
are accepted when they resolve (symlinks followed) inside one of the **roots**: that home folder
and the daemon's ``$RH_HOME``. Everything else is refused (403), as is the daemons' own folder
(``$RH_HOME/daemons``: tokens, ``den.json``), and removing or moving a root itself. ``ls``, ``get``
and ``exists`` are reads; a read caller (a Den share) may not read hidden paths (any part starting
with ``.``: ``~/.ssh``, ``~/.aws``, ``.env``) or anything under ``$RH_HOME``, so that a share never
yields a credential that grants more. The rest change files and need write access.

Replies use the original's envelope: ``{"data", "output_type": "result_serialized",
"serialization": null}``, or ``{"output_type": "success"}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runhouse.exceptions import AuthError, BadRequest
from runhouse.server.folders import check_rel
from runhouse.server.routes._body import decode_base64, json_body
from runhouse.server.state import DaemonState

MAX_READ = 256 * 2**20  # a bigger file is better fetched with rsync or scp


class Roots:
    """Where file routes may reach, for one caller."""

    def __init__(self, home: Path, rh_home: Path, write: bool) -> None:
        self.home = home.resolve()
        self.rh_home = rh_home.resolve()
        self.secret = (rh_home / "daemons").resolve()
        self.write = write

    def resolve(self, raw: Any, field: str = "path") -> Path:
        if not isinstance(raw, str) or not raw or "\0" in raw or len(raw) > 4096:
            raise BadRequest(f"{field!r} must be a path (a non-empty string)", 400)
        path = Path(raw).expanduser() if raw.startswith("~") else Path(raw)
        if not path.is_absolute():
            path = self.home / path
        resolved = path.resolve()
        root = next((r for r in (self.rh_home, self.home) if _within(resolved, r)), None)
        if root is None:
            raise AuthError(
                f"{raw!r} is outside the folders file routes may reach ({self.home}, {self.rh_home})", 403
            )
        if _within(resolved, self.secret):
            raise AuthError(
                f"{raw!r} is inside the daemons' own folder (tokens), which file routes never touch", 403
            )
        if not self.write:
            hidden = any(part.startswith(".") for part in resolved.relative_to(root).parts)
            if hidden or _within(resolved, self.rh_home):
                raise AuthError(
                    f"read access cannot read hidden paths or runhouse's own folder ({raw!r})", 403
                )
        return resolved

    def not_a_root(self, path: Path) -> Path:
        if path in (self.home, self.rh_home) or path in self.home.parents:
            raise BadRequest(f"{path} is a root folder of the cluster; it cannot be removed or moved", 400)
        return path


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _roots(request: Request) -> Roots:
    state: DaemonState = request.app.state.rh
    caller = request.scope.get("rh.caller")
    return Roots(Path.home(), state.settings.home, getattr(caller, "access", "write") == "write")


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{name!r} must be true or false", 400)
    return value


def _result(data: Any) -> Response:
    return JSONResponse({"data": data, "output_type": "result_serialized", "serialization": None})


def _success() -> Response:
    return JSONResponse({"output_type": "success", "data": None, "serialization": None})


async def _run(work: Callable[[], Any]) -> Any:
    """File work off the daemon's loop (a big rmtree must not hold up calls)."""
    try:
        return await asyncio.to_thread(work)
    except FileNotFoundError as e:
        raise BadRequest(f"{e.filename or e}: no such file or folder", 404) from None
    except PermissionError as e:
        raise AuthError(f"{e.filename or e}: permission denied on the cluster", 403) from None
    except (NotADirectoryError, IsADirectoryError, FileExistsError, OSError) as e:
        raise BadRequest(f"{e.filename or ''}: {e.strerror or e}", 409) from None


async def ls(request: Request) -> Response:
    """``{"path", "full_paths": true, "sort": false}`` -> the folder's entries (newest first with sort)."""
    body = await json_body(request, ("path",))
    roots = _roots(request)
    path = roots.resolve(body["path"])
    full, by_time = _flag(body, "full_paths", True), _flag(body, "sort", False)

    def work() -> list[str]:
        if not path.is_dir():
            raise BadRequest(
                f"{path} is not a folder" if path.exists() else f"{path} does not exist",
                404 if not path.exists() else 400,
            )
        entries = [p for p in path.iterdir() if roots.write or not p.name.startswith(".")]
        if by_time:
            entries.sort(key=lambda p: p.lstat().st_mtime, reverse=True)
        return [str(p) if full else p.name for p in entries]

    return _result(await _run(work))


async def mkdir(request: Request) -> Response:
    """``{"path"}``: make the folder (and missing parents); an existing folder is fine."""
    body = await json_body(request, ("path",))
    path = _roots(request).resolve(body["path"])
    await _run(lambda: path.mkdir(parents=True, exist_ok=True))
    return _success()


async def get(request: Request) -> Response:
    """``{"path", "encoding", "mode"}`` -> the file's text; a file that is not UTF-8 text (or
    ``mode: "rb"`` with ``encoding: "base64"``) comes as base64 with ``"encoding": "base64"``."""
    body = await json_body(request, ("path",))
    path = _roots(request).resolve(body["path"])
    encoding = body.get("encoding") or "utf-8"
    if not isinstance(encoding, str):
        raise BadRequest("'encoding' must be a text encoding name or 'base64'", 400)

    def work() -> bytes:
        if path.stat().st_size > MAX_READ:
            raise BadRequest(f"{path} is over {MAX_READ >> 20} MiB; copy it with rsync instead", 413)
        return path.read_bytes()

    raw = await _run(work)
    if encoding != "base64":
        try:
            return _result(raw.decode(encoding))
        except (UnicodeDecodeError, LookupError):
            pass
    return JSONResponse(
        {
            "data": base64.b64encode(raw).decode(),
            "encoding": "base64",
            "output_type": "result_serialized",
            "serialization": None,
        }
    )


async def put(request: Request) -> Response:
    """``{"path", "contents": {name: content}, "overwrite": false, "serialization"}``: write files
    into the folder. Text is written as UTF-8, other JSON values as JSON, and with ``serialization:
    "pickle"`` (the original client's) each content is base64 whose bytes are written as they are."""
    body = await json_body(request, ("path", "contents"))
    roots = _roots(request)
    folder = roots.resolve(body["path"])
    contents = body["contents"]
    if not isinstance(contents, dict):
        raise BadRequest("'contents' must map file names to their contents", 400)
    overwrite = _flag(body, "overwrite", False)
    binary = body.get("serialization") == "pickle"
    files: list[tuple[Path, bytes]] = []
    for name, content in contents.items():
        target = roots.resolve(str(folder / check_rel(str(name))), "contents")
        if binary:
            if not isinstance(content, str):
                raise BadRequest(f"content of {name!r} must be base64 text with serialization 'pickle'", 400)
            files.append((target, decode_base64(content)))
        else:
            data = content if isinstance(content, str) else json.dumps(content)
            files.append((target, data.encode()))

    def work() -> None:
        clash = [str(t) for t, _ in files if t.exists() and not overwrite]
        if clash:
            raise BadRequest(f"already there (send overwrite: true to replace): {clash[:5]}", 409)
        for target, data in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    await _run(work)
    return _success()


async def rm(request: Request) -> Response:
    """``{"path", "contents": [names], "recursive": false}``: remove the named entries of the folder,
    or the path itself; a folder's subfolders go only with ``recursive: true``."""
    body = await json_body(request, ("path",))
    roots = _roots(request)
    path = roots.resolve(body["path"])
    recursive = _flag(body, "recursive", False)
    names = body.get("contents")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise BadRequest("'contents' must be a list of names inside the folder", 400)
    targets = [roots.resolve(str(path / check_rel(n)), "contents") for n in names] if names else [path]
    for target in targets:
        roots.not_a_root(target)

    def remove(target: Path) -> None:
        if target.is_dir() and not target.is_symlink():
            if recursive:
                shutil.rmtree(target)
            elif any(target.iterdir()):
                raise BadRequest(f"{target} is a folder with contents; send recursive: true", 409)
            else:
                target.rmdir()
        else:
            target.unlink()

    def work() -> None:
        for target in targets:
            remove(target)

    await _run(work)
    return _success()


async def mv(request: Request) -> Response:
    """``{"path", "dest_path", "overwrite": true}``: move a file or folder."""
    body = await json_body(request, ("path", "dest_path"))
    roots = _roots(request)
    source = roots.not_a_root(roots.resolve(body["path"]))
    dest = roots.not_a_root(roots.resolve(body["dest_path"], "dest_path"))
    overwrite = _flag(body, "overwrite", True)

    def work() -> None:
        if not source.exists():
            raise BadRequest(f"{source} does not exist", 404)
        if dest.exists() and not overwrite:
            raise BadRequest(f"{dest} exists; send overwrite: true to replace it", 409)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(dest))

    await _run(work)
    return _success()


async def exists(request: Request) -> Response:
    """``{"path"}`` -> whether a file or folder is there."""
    body = await json_body(request, ("path",))
    path = _roots(request).resolve(body["path"])
    return _result(await _run(path.exists))
