"""``rh.folder``: a folder on this machine or on a cluster.

::

    data = rh.folder("./data")                  # a folder here
    on_cluster = data.to(cluster)               # synced there (only files that changed travel)
    on_cluster.ls()                             # names in the cluster's copy
    placed = data.to(cluster, path="~/data")    # or copied to a path of your choosing there

Sending uses the same sync as envs' working dirs and local requirements (``.gitignore`` is
respected; your home and the root directory are refused). A folder's config names its cluster by
where it is saved (``~/name``, ``/owner/name``) when it is saved, so it loads by name; else it holds
the cluster's whole config (a bare name could not be loaded back).
"""

from __future__ import annotations

import os
import posixpath
import shlex
from pathlib import Path
from typing import Any

from runhouse.exceptions import ConfigError
from runhouse.resources.cluster import Cluster, cluster_from_config
from runhouse.resources.resource import Resource
from runhouse.resources.sync import check_syncable

# The daemon's record of a synced folder's files: bookkeeping, not the user's.
_SYNC_MANIFEST = ".rh_manifest.json"


def _cluster_path(path: str) -> str:
    """Check a path meant for a cluster: absolute or under ``~/``, and not the home or root itself."""
    if not (path.startswith("/") or path.startswith("~/")):
        raise ConfigError(f"a folder path on a cluster must be absolute or start with '~/', got {path!r}")
    parts = path.split("/")
    if ".." in parts:
        raise ConfigError(f"a folder path on a cluster may not contain '..', got {path!r}")
    if posixpath.normpath(path) in ("/", "~"):
        raise ConfigError(f"refusing to use {path!r} on a cluster: it is the home or the root directory")
    return path


def _shell(path: str) -> str:
    """``path`` quoted for the cluster's shell, with a leading ``~/`` still meaning its home."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _system_ref(system: Cluster) -> str | dict[str, Any]:
    """Where the cluster is saved (``~/name`` or ``/owner/name``), so it loads by name; else its config."""
    return system.rns_address or system.config()


class Folder(Resource):
    """A folder: ``path`` on ``system`` (a cluster), or on this machine when ``system`` is None."""

    RESOURCE_TYPE = "folder"

    def __init__(
        self, path: str | os.PathLike[str], system: Cluster | None = None, name: str | None = None
    ) -> None:
        super().__init__(name)
        if not str(path):
            raise ConfigError("a folder needs a path")
        if system is not None and not isinstance(system, Cluster):
            raise ConfigError(f"a folder's system must be a cluster or None, got {type(system).__name__}")
        self.system = system
        if system is None:
            self.path = os.path.abspath(Path(path).expanduser())
        else:
            self.path = _cluster_path(str(path))

    def ls(self) -> list[str]:
        """The names in the folder (hidden ones included), sorted."""
        if self.system is None:
            if not Path(self.path).is_dir():
                raise ConfigError(f"folder {self.path} does not exist on this machine")
            return sorted(os.listdir(self.path))
        rc, out, err = self.system.run([f"ls -A -- {_shell(self.path)}"])[0]
        if rc != 0:
            raise ConfigError(f"cannot list {self.path} on cluster {self.system.name!r}: {err.strip()}")
        return sorted(n for n in out.splitlines() if n and n != _SYNC_MANIFEST)

    def to(self, system: Cluster, path: str | None = None) -> Folder:
        """Send this folder to ``system``; return the folder there.

        Without ``path`` it lands in the cluster's code folder (only changed files travel on later
        calls); with ``path`` (absolute or ``~/...``) its files are also copied there, next to
        whatever that folder already holds."""
        if not isinstance(system, Cluster):
            raise ConfigError(f".to() needs a cluster (rh.cluster(...)), got {type(system).__name__}")
        if self.system is not None:
            raise ConfigError(
                f"this folder lives on cluster {self.system.name!r}; .to() sends folders from this machine"
            )
        dest = _cluster_path(path) if path is not None else None  # checked before anything moves
        synced = system.sync(check_syncable(Path(self.path)))
        if dest is None:
            return Folder(synced, system, self.name)
        target = _shell(dest)
        copy = (
            f"mkdir -p {target} && cp -a {shlex.quote(synced)}/. {target}/ && rm -f {target}/{_SYNC_MANIFEST}"
        )
        rc, _, err = system.run([copy])[0]
        if rc != 0:
            raise ConfigError(
                f"copying {self.path} to {dest} on cluster {system.name!r} failed: {err.strip()}"
            )
        return Folder(dest, system, self.name)

    def config(self) -> dict[str, Any]:
        system = _system_ref(self.system) if self.system is not None else None
        return {**super().config(), "path": self.path, "system": system}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Folder:
        ref = config.get("system")
        system: Cluster | None = None
        if isinstance(ref, str):
            system = Cluster.load(ref)
        elif isinstance(ref, dict):
            system = cluster_from_config(ref)
        return cls(config["path"], system, config.get("name"))

    def __repr__(self) -> str:
        where = f"cluster {self.system.name!r}" if self.system is not None else "this machine"
        return f"<Folder {self.path!r} on {where}>"


def folder(
    path: str | os.PathLike[str] | None = None, system: Cluster | None = None, name: str | None = None
) -> Folder:
    """A folder: ``rh.folder("./data")`` here, ``rh.folder("~/data", system=cluster)`` on a cluster,
    ``rh.folder(name="saved")`` loads a saved one. ``.to(cluster)`` sends it, ``.ls()`` lists it."""
    if path is None:
        if name is None:
            raise ConfigError("rh.folder needs path= (a folder), or name= of a saved one")
        return Folder.load(name)
    if system is None and not Path(path).expanduser().is_dir():
        raise ConfigError(f"folder {str(path)!r} does not exist on this machine (or is not a directory)")
    return Folder(path, system, name)
