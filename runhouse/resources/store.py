"""Where resources are saved by name.

Names: ``~/name`` lives in the local store, a folder under ``$RH_HOME/resources`` (and
``$RH_HOME/secrets`` for secrets, mode 0600); ``/owner/name`` lives in Den, the team registry; a
bare ``name`` means ``~/name`` while no Den login is configured; ``@/name`` is the current user's
(``/<you>/name`` when logged in to Den, ``~/name`` otherwise). Saves are atomic (write to a
temporary file, then rename), so concurrent saves of one name leave one whole record.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from runhouse.exceptions import ConfigError, ObjectNotFound
from runhouse.settings import Settings, load_settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_CONFIG_BYTES = 1 << 20


def check_name(name: str, whole: str | None = None) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"invalid resource name {whole or name!r}: use letters, digits, '-', '_' or '.' (up to 128), "
            "starting with a letter or digit"
        )
    return name


def local_name(name: str) -> str:
    """The local-store key for ``name`` (``~/x`` or ``x``); Den names are refused with a hint."""
    if name.startswith("/"):
        raise ConfigError(
            f"{name!r} names a resource in Den, the team registry, which this client is not logged in to; "
            "run `runhouse login` first, or save and load with '~/name' to use the local store"
        )
    key = name[2:] if name.startswith(("~/", "@/")) else name
    return check_name(key, name)


def den_address(name: str, settings: Settings) -> str | None:
    """The Den URI (``/owner/name``) that ``name`` means for this client, or None for the local store.

    ``~/x`` is always local; ``/owner/x`` is always Den; a bare ``x`` is ``/<you>/x`` while logged in
    to Den and ``~/x`` otherwise."""
    if name.startswith("~/"):
        return None
    if name.startswith("@/"):
        name = name[2:]
        if not name:
            raise ConfigError("'@/' needs a name after it: '@/my_resource'")
    elif name.startswith("/"):
        parts = name.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ConfigError(f"invalid Den name {name!r}: Den names look like '/owner/name'")
        check_name(parts[2], name)
        if not settings.logged_in:
            local_name(name)  # raises the not-logged-in hint
        return name
    if not settings.logged_in:
        return None
    check_name(name)
    from runhouse.resources.den import current_user  # only logged-in clients load the Den client

    return f"/{current_user(settings)}/{name}"


def rns_address_of(name: str, settings: Settings) -> str:
    """Where a resource named ``name`` is saved: ``/owner/x`` in Den or ``~/x`` locally.

    ``~/x`` and ``/owner/x`` are taken as they are (a Den name is checked for shape only, so a
    config naming it loads without a login); ``@/x`` and bare names follow :func:`den_address`."""
    if name.startswith("/"):
        parts = name.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ConfigError(f"invalid Den name {name!r}: Den names look like '/owner/name'")
        check_name(parts[2], name)
        return name
    return den_address(name, settings) or f"~/{local_name(name)}"


class LocalStore:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()

    def _folder(self, secret: bool) -> Path:
        folder = self.settings.home / ("secrets" if secret else "resources")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    def path(self, name: str, secret: bool = False) -> Path:
        return self._folder(secret) / f"{local_name(name)}.json"

    def save(self, name: str, record: dict[str, Any], secret: bool = False) -> str:
        data = json.dumps(record, indent=2, sort_keys=True).encode()
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config of {name!r} is {len(data)} bytes; the limit is {MAX_CONFIG_BYTES}")
        target = self.path(name, secret)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"~/{local_name(name)}"

    def load(self, name: str, secret: bool = False) -> dict[str, Any]:
        path = self.path(name, secret)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            kind = "secret" if secret else "resource"
            raise ObjectNotFound(f"no saved {kind} named {name!r} (looked in {path.parent})", 404) from None
        except ValueError as e:
            raise ConfigError(f"the saved config {path} is not valid JSON ({e}); delete or fix it") from e

    def exists(self, name: str, secret: bool = False) -> bool:
        return self.path(name, secret).exists()

    def delete(self, name: str, secret: bool = False) -> bool:
        try:
            self.path(name, secret).unlink()
            return True
        except FileNotFoundError:
            return False
