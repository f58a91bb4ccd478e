"""Building a worker's Python environment before the worker starts.

An env's wire config (made by the client's :class:`~runhouse.resources.env.Env`) says::

    {"name": "np_env", "env_vars": {...}, "setup_cmds": [...], "working_dir": "/synced/dir" | None,
     "reqs": [{"kind": "pip" | "local" | "conda", "spec": "numpy==2.1" | "/synced/pkg"}],
     "venv": None | "<dir name>", "conda": None | {"name": ..., "spec": {...} | None}}

:class:`EnvBuilder` turns that into a Python executable for the worker: the daemon's own
interpreter by default (workers share its packages, as in the original system); a virtual
environment of the env's own with ``venv``; or a conda environment.

An env's venv is isolated: it sees neither the daemon's packages nor the base interpreter's, only
what the worker itself needs from the daemon's environment (runhouse, cloudpickle, uvloop). Those
are linked into a runtime folder next to the envs (``.runtime``) that a ``.pth`` file in the venv
adds after the venv's own site-packages, so a package the env installs shadows the shared one.
(``--system-site-packages`` would expose the *base* interpreter's packages, not the daemon's venv,
which is how runhouse is installed on SSH hosts and by most users.) Requirements are installed with ``uv`` when it is on the machine, else pip;
setup commands run after. Every line the tools print goes to ``emit`` so the client sees progress.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import shutil
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from runhouse.compute.hostprobe import pip_settings, translate, uv_settings
from runhouse.exceptions import EnvSetupError

Emit = Callable[[str], None]
INSTALL_TIMEOUT_S = 1800


def find_uv() -> str | None:
    """The uv executable next to our interpreter or on PATH, if any."""
    beside = Path(sysconfig.get_path("scripts")) / "uv"
    if beside.exists():
        return str(beside)
    return shutil.which("uv")


def find_conda() -> str | None:
    for tool in ("micromamba", "mamba", "conda"):
        path = shutil.which(tool)
        if path:
            return path
    return None


def uv_index_settings() -> tuple[list[str], dict[str, str]]:
    """This machine's pip index settings (``pip.conf``, ``PIP_*``) as uv arguments and variables,
    unless uv has index settings of its own: uv does not read pip's, and a host set up for a private
    index through pip alone must install envs from that index too (the bootstrap does the same)."""
    environ = dict(os.environ)
    home = Path.home()
    if uv_settings(environ, home):
        return [], {}
    return translate(pip_settings(environ, home, Path(sys.prefix)), environ)


def install_command(python: str, specs: list[str], uv: str | None, uv_args: Sequence[str] = ()) -> list[str]:
    """The command installing ``specs`` into the environment of ``python``."""
    if uv:
        return [uv, "pip", "install", "--python", python, *uv_args, *specs]
    return [sys.executable, "-m", "pip", "--python", python, "install", "--disable-pip-version-check", *specs]


def conda_create_command(
    conda: str, name: str, spec: dict[str, Any] | None, spec_file: str | None
) -> list[str]:
    if spec_file:
        return (
            [conda, "env", "create", "-y", "-n", name, "-f", spec_file]
            if "micromamba" not in conda
            else [conda, "create", "-y", "-n", name, "-f", spec_file]
        )
    deps = [d for d in (spec or {}).get("dependencies", []) if isinstance(d, str)]
    return [
        conda,
        "create",
        "-y",
        "-n",
        name,
        *(deps or [f"python={sys.version_info.major}.{sys.version_info.minor}"]),
    ]


WORKER_PACKAGES = ("runhouse", "cloudpickle", "uvloop")  # what a worker imports from outside the stdlib
RUNTIME_PTH = "_runhouse_runtime.pth"


def link_runtime(venv: Path, runtime: Path) -> None:
    """Give the venv at ``venv`` the daemon's copies of :data:`WORKER_PACKAGES` and nothing else.

    ``runtime`` gets a symlink to each package's folder as the daemon imports it (an editable
    checkout or an installed copy alike); the venv gets a ``.pth`` naming ``runtime``. A venv made
    by an older version with ``--system-site-packages`` is switched to an isolated one."""
    runtime.mkdir(parents=True, exist_ok=True)
    for name in WORKER_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue  # uvloop is optional
        target = Path(list(spec.submodule_search_locations)[0])
        link = runtime / name
        if not link.is_symlink() or link.readlink() != target:
            tmp = runtime / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target, target_is_directory=True)
            tmp.replace(link)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / version / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    pth = site / RUNTIME_PTH
    if not pth.exists() or pth.read_text().strip() != str(runtime):
        pth.write_text(f"{runtime}\n")
    cfg = venv / "pyvenv.cfg"
    text = cfg.read_text()
    if "include-system-site-packages = true" in text:
        cfg.write_text(
            text.replace("include-system-site-packages = true", "include-system-site-packages = false")
        )


class EnvBuilder:
    def __init__(self, envs_dir: Path, emit: Emit) -> None:
        self.envs_dir = envs_dir
        self.emit = emit

    async def build(self, config: dict[str, Any]) -> str:
        """Prepare the env; return the Python executable its worker should run."""
        name = config["name"]
        python = await self._interpreter(name, config)
        pip_specs = [r["spec"] for r in config.get("reqs", []) if r["kind"] in ("pip", "local")]
        conda_specs = [r["spec"] for r in config.get("reqs", []) if r["kind"] == "conda"]
        if pip_specs:
            uv = find_uv()
            uv_args, uv_env = uv_index_settings() if uv else ([], {})
            self.emit(f"Installing {', '.join(pip_specs)} into env {name!r} with {'uv' if uv else 'pip'}\n")
            await self._run(
                install_command(python, pip_specs, uv, uv_args),
                f"installing {', '.join(pip_specs)}",
                env={**os.environ, **uv_env} if uv_env else None,
            )
        if conda_specs:
            conda = self._conda_tool(conda_specs)
            target = (config.get("conda") or {}).get("name")
            where = ["-n", target] if target else ["-p", str(Path(python).parents[1])]
            await self._run(
                [conda, "install", "-y", *where, *conda_specs], f"installing {', '.join(conda_specs)}"
            )
        for command in config.get("setup_cmds", []):
            self.emit(f"$ {command}\n")
            await self._run(
                ["/bin/sh", "-c", command],
                f"setup command {command!r}",
                env=self.worker_environ(config, python),
                cwd=config.get("working_dir"),
            )
        return python

    def worker_environ(self, config: dict[str, Any], python: str) -> dict[str, str]:
        """Environment variables for the env's setup commands and worker."""
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (config.get("env_vars") or {}).items()})
        if python != sys.executable:
            bin_dir = str(Path(python).parent)
            env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
            env["VIRTUAL_ENV"] = str(Path(python).parents[1])
        return env

    async def _interpreter(self, name: str, config: dict[str, Any]) -> str:
        if config.get("conda"):
            return await self._conda_env(config["conda"])
        venv = config.get("venv")
        if not venv:
            return sys.executable
        path = self.envs_dir / venv
        python = path / "bin" / "python"
        if not python.exists():
            self.emit(f"Creating virtual environment {path}\n")
            self.envs_dir.mkdir(parents=True, exist_ok=True)
            await self._run(
                [sys.executable, "-m", "venv", "--without-pip", str(path)],
                f"creating the virtual environment for {name!r}",
            )
        link_runtime(path, self.envs_dir / ".runtime")
        return str(python)

    def _conda_tool(self, specs: list[str]) -> str:
        conda = find_conda()
        if conda is None:
            raise EnvSetupError(
                f"conda requirements ({', '.join(specs)}) need conda or micromamba on the cluster, and neither "
                "is on its PATH; install micromamba (https://mamba.readthedocs.io) or use pip requirements"
            )
        return conda

    async def _conda_env(self, conda_cfg: dict[str, Any]) -> str:
        name = conda_cfg["name"]
        conda = self._conda_tool([f"env {name}"])
        prefix = await self._conda_prefix(conda, name)
        if prefix is None:
            spec_file = None
            if conda_cfg.get("spec"):
                self.envs_dir.mkdir(parents=True, exist_ok=True)
                spec_path = self.envs_dir / f"{name}.conda.yaml"
                spec_path.write_text(yaml.safe_dump(conda_cfg["spec"]))
                spec_file = str(spec_path)
            elif conda_cfg.get("existing"):
                raise EnvSetupError(
                    f"conda env {name!r} does not exist on the cluster; create it or pass its spec"
                )
            self.emit(f"Creating conda env {name!r}\n")
            await self._run(
                conda_create_command(conda, name, conda_cfg.get("spec"), spec_file),
                f"creating conda env {name!r}",
            )
            prefix = await self._conda_prefix(conda, name)
            if prefix is None:
                raise EnvSetupError(f"conda reported success but env {name!r} is not listed")
        python = Path(prefix) / "bin" / "python"
        if not python.exists():
            raise EnvSetupError(f"conda env {name!r} has no Python; add python to its dependencies")
        return str(python)

    async def _conda_prefix(self, conda: str, name: str) -> str | None:
        proc = await asyncio.create_subprocess_exec(
            conda, "env", "list", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        for line in out.decode(errors="replace").splitlines():
            parts = line.replace("*", " ").split()
            if len(parts) >= 2 and parts[0] == name:
                return parts[-1]
        return None

    async def _run(
        self, argv: list[str], what: str, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> None:
        """Run a command, streaming its output; raise EnvSetupError with its output if it fails."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as e:
            raise EnvSetupError(f"{what} failed: cannot run {shlex.join(argv)}: {e}") from e
        assert proc.stdout is not None
        tail: list[str] = []

        async def relay_output() -> int:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace")
                tail.append(line)
                del tail[:-40]
                self.emit(line)
            return await proc.wait()

        try:
            code = await asyncio.wait_for(relay_output(), INSTALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            proc.kill()
            raise EnvSetupError(f"{what} did not finish within {INSTALL_TIMEOUT_S}s") from None
        if code != 0:
            raise EnvSetupError(f"{what} failed (exit code {code}):\n{''.join(tail).rstrip()}")
