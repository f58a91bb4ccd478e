"""``rh.package``: something installable, for an env's requirements.

::

    numpy = rh.package("numpy==1.26")                 # from the package index (pip)
    mine = rh.package("./my_pkg")                     # a local folder: synced, then installed
    env = rh.env(reqs=[numpy, mine, "six"], name="np_env")

A package becomes one of the requirement spellings :func:`runhouse.resources.env.parse_reqs`
understands (``to_requirement()``), so envs install it like any other requirement. A local folder is
kept both as given and as the absolute path it resolved to when the package was made, so the config
still names the same folder when it is rebuilt from another working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runhouse.exceptions import ConfigError
from runhouse.resources.resource import Resource

INSTALL_METHODS = ("pip", "conda", "local")


def _pip_spec(target: str) -> str:
    """A spec pip accepts: bare git URLs (``https://host/x.git``, ``git@host:x.git``) get pip's ``git+``."""
    if target.startswith("git@"):
        host, _, path = target[4:].partition(":")
        return f"git+ssh://git@{host}/{path}"
    is_git = target.endswith(".git") or ".git@" in target or ".git#" in target
    if is_git and target.startswith(("https://", "http://", "ssh://")):
        return f"git+{target}"
    return target


class Package(Resource):
    """An installable thing: a PyPI spec, a local package folder, a git URL or a conda package.

    ``install_method`` is ``"pip"``, ``"conda"`` or ``"local"``; left out, an existing local folder
    means ``"local"`` and anything else ``"pip"``.
    """

    RESOURCE_TYPE = "package"

    def __init__(
        self,
        install_target: str,
        install_method: str | None = None,
        install_args: str | None = None,
        name: str | None = None,
        local_path: str | None = None,
    ) -> None:
        super().__init__(name)
        if not isinstance(install_target, str) or not install_target.strip():
            raise ConfigError(f"a package needs an install_target string, got {install_target!r}")
        if install_method is not None and install_method not in INSTALL_METHODS:
            raise ConfigError(
                f"install_method must be one of {', '.join(INSTALL_METHODS)}, got {install_method!r}"
            )
        self.install_target = install_target.strip()
        found = Path(self.install_target).expanduser()
        self.install_method = install_method or ("local" if found.is_dir() else "pip")
        self.install_args = install_args or None
        self.local_path: str | None = None
        if self.install_method == "local":
            # Resolved once, here: a config rebuilt elsewhere keeps naming the same folder.
            self.local_path = local_path or str(found.resolve())

    def to_requirement(self) -> str:
        """The requirement string envs understand: an absolute folder, ``pip:...`` or ``conda:...``."""
        if self.install_args:
            raise ConfigError(
                f"package {self.install_target!r} has install_args={self.install_args!r}, which an env's "
                "reqs cannot carry; install it with setup_cmds=['pip install ...'] instead"
            )
        if self.install_method == "local":
            return str(self.local_path)
        if self.install_method == "conda":
            return f"conda:{self.install_target}"
        return f"pip:{_pip_spec(self.install_target)}"

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "install_target": self.install_target,
            "install_method": self.install_method,
            "install_args": self.install_args,
            "local_path": self.local_path,
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Package:
        return cls(
            config["install_target"],
            install_method=config.get("install_method"),
            install_args=config.get("install_args"),
            name=config.get("name"),
            local_path=config.get("local_path"),
        )

    def __repr__(self) -> str:
        return f"<Package {self.install_target!r} via {self.install_method}>"


def package(
    install_target: str | None = None,
    install_method: str | None = None,
    name: str | None = None,
    install_args: str | None = None,
) -> Package:
    """An installable package: ``rh.package("numpy==1.26")``, ``rh.package("./my_pkg")``,
    ``rh.package("git+https://github.com/org/repo.git")`` or ``rh.package("numpy", "conda")``;
    ``rh.package(name="saved")`` loads a saved one. Use it in ``rh.env(reqs=[...])``."""
    if install_target is None:
        if name is None:
            raise ConfigError("rh.package needs install_target= (a PyPI spec, folder or git URL), or name=")
        return Package.load(name)
    made = Package(install_target, install_method, install_args, name)
    if made.install_method == "local" and not Path(made.local_path or "").is_dir():
        raise ConfigError(f"local package {install_target!r} is not a directory on this machine")
    return made
