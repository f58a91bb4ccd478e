"""What an SSH host has for installing runhouse: run *on the host*, by the bootstrap.

The bootstrap sends this file's source to the host's venv Python (``python -c <source> <venv>
<wheel>``), so it uses the standard library only and imports nothing of ours. It prints one JSON
object: the login's home, the wheel already installed in the venv, whether the wheel is already
uploaded, the uv to install with (the venv's, or one on the PATH or in uv's usual folders), whether
pip can bring uv in, and how the host's package index settings reach uv.

uv reads its own settings (``UV_*`` variables, ``uv.toml``) but not pip's. A host configured for
pip only (``PIP_INDEX_URL``, ``pip.conf``) gets those settings passed on to uv as arguments
(``--index-url``, ``--extra-index-url``, ``--find-links``, ``--no-index``,
``--allow-insecure-host``) and variables (``SSL_CERT_FILE`` for pip's ``cert``, proxies); a host
with uv settings of its own gets nothing added, since uv already follows them.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

PYPI = "https://pypi.org/simple"
UV_VARIABLES = (
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_CONFIG_FILE",
)
UV_INDEX_KEYS = re.compile(
    r"^\s*(index-url|extra-index-url|default-index|find-links|no-index|\[\[index\]\])", re.M
)
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "no-index", "trusted-host", "cert", "proxy")
PIP_LISTS = ("extra-index-url", "find-links", "trusted-host")


def _config_home(env: dict[str, str], home: Path) -> Path:
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config")


def find_uv(venv: Path, env: dict[str, str], home: Path) -> str:
    """The venv's uv, else one on the PATH, else one in uv's installer folders; "" if none."""
    candidates = [str(venv / "bin" / "uv"), shutil.which("uv", path=env.get("PATH")) or ""]
    candidates += [str(home / ".local" / "bin" / "uv"), str(home / ".cargo" / "bin" / "uv")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), "")


def uv_settings(env: dict[str, str], home: Path, etc: Path = Path("/etc")) -> list[str]:
    """Where uv's own index settings on this host are (variables and uv.toml files); [] if none."""
    found = [f"{name}={env[name]}" for name in UV_VARIABLES if env.get(name)]
    dirs = [_config_home(env, home)] + [
        Path(d) for d in (env.get("XDG_CONFIG_DIRS") or str(etc / "xdg")).split(":") if d
    ]
    for path in [d / "uv" / "uv.toml" for d in dirs] + [etc / "uv" / "uv.toml"]:
        try:
            if UV_INDEX_KEYS.search(path.read_text()):
                found.append(str(path))
        except OSError:
            pass
    return found


def pip_files(env: dict[str, str], home: Path, prefix: Path, etc: Path = Path("/etc")) -> list[Path]:
    """pip's configuration files, in the order pip loads them (a later one wins)."""
    named = env.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    dirs = [d for d in (env.get("XDG_CONFIG_DIRS") or str(etc / "xdg")).split(":") if d]
    files = [Path(d) / "pip" / "pip.conf" for d in dirs] + [etc / "pip.conf"]
    if not (named and Path(named).exists()):  # pip skips the user's files when one is named
        files += [home / ".pip" / "pip.conf", _config_home(env, home) / "pip" / "pip.conf"]
    files.append(prefix / "pip.conf")
    if named:
        files.append(Path(named))
    return files


def pip_settings(
    env: dict[str, str], home: Path, prefix: Path, etc: Path = Path("/etc")
) -> dict[str, tuple[str, str]]:
    """pip's index settings on this host: key -> (value, where it is set)."""
    settings: dict[str, tuple[str, str]] = {}
    for path in pip_files(env, home, prefix, etc):
        parser = configparser.RawConfigParser()
        try:
            if not parser.read(path):
                continue
        except configparser.Error:
            continue
        for section in ("global", "install"):  # [install] overrides [global] for pip install
            if parser.has_section(section):
                for key, value in parser.items(section):
                    key = key.replace("_", "-")
                    if key in PIP_KEYS:
                        settings[key] = (value.strip(), str(path))
    for key in PIP_KEYS:
        variable = "PIP_" + key.upper().replace("-", "_")
        if env.get(variable):
            settings[key] = (env[variable].strip(), variable)
    return settings


def translate(settings: dict[str, tuple[str, str]], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """pip's settings as uv arguments and variables."""
    args: list[str] = []
    variables: dict[str, str] = {}
    if "index-url" in settings:
        args += ["--index-url", settings["index-url"][0]]
    for key, flag in (
        ("extra-index-url", "--extra-index-url"),
        ("find-links", "--find-links"),
        ("trusted-host", "--allow-insecure-host"),
    ):
        for value in settings.get(key, ("", ""))[0].split():
            args += [flag, value]
    if "--extra-index-url" in args:  # pip picks the best version across all its indexes; uv, by default,
        args += ["--index-strategy", "unsafe-best-match"]  # the first index that has the package
    if settings.get("no-index", ("", ""))[0].lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    if "cert" in settings and not env.get("SSL_CERT_FILE"):
        variables["SSL_CERT_FILE"] = settings["cert"][0]
    if "proxy" in settings:
        for name in ("HTTPS_PROXY", "HTTP_PROXY"):
            if not env.get(name) and not env.get(name.lower()):
                variables[name] = settings["proxy"][0]
    return args, variables


def describe(uv_own: list[str], settings: dict[str, tuple[str, str]]) -> str:
    """The index the installer waits on, in words, for progress and error messages."""
    if uv_own:
        return f"uv's own index settings ({', '.join(uv_own)})"
    parts = [
        f"{key} {value} (pip's, from {where})"
        for key, (value, where) in settings.items()
        if key in ("index-url", "extra-index-url", "find-links", "no-index")
    ]
    if "index-url" not in settings and settings.get("no-index", ("", ""))[0].lower() not in (
        "1",
        "true",
        "yes",
        "on",
    ):
        parts.insert(0, f"the default index {PYPI}")
    return "; ".join(parts)


def probe(
    venv: Path, wheel: str, env: dict[str, str], home: Path, etc: Path = Path("/etc")
) -> dict[str, Any]:
    """The host's facts (see the module's docstring); ``etc`` is where system settings live."""
    uv_own = uv_settings(env, home, etc)
    settings = pip_settings(env, home, venv, etc)
    args, variables = translate(settings, env) if not uv_own else ([], {})
    try:
        installed = (venv / ".rh_installed").read_text().strip()
    except OSError:
        installed = ""
    try:
        has_pip = importlib.util.find_spec("pip") is not None
    except (ImportError, ValueError):
        has_pip = False
    return {
        "home": str(home),
        "installed": installed,
        "uploaded": (home / ".rh" / "wheels" / wheel).is_file(),
        "uv": find_uv(venv, env, home),
        "pip": has_pip,
        "uv_args": args,
        "uv_env": variables,
        "index": describe(uv_own, settings),
        "pip_index": describe([], settings),
    }


def main(argv: list[str]) -> None:
    venv, wheel = Path(argv[0]).expanduser(), argv[1]
    print(json.dumps(probe(venv, wheel, dict(os.environ), Path.home())))


if __name__ == "__main__":
    main(sys.argv[1:])
