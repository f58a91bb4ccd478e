"""Encryption of secret values at rest, with a Fernet key (AES-128-CBC + HMAC-SHA256).

The key comes from ``RH_DEN_SECRET_KEY`` (passed in by the command line) or else from
``<data dir>/secret.key``, made with mode 0600 on first start. Losing the key loses the secrets;
back it up with the database. Values are sealed as one JSON object per saved version, so the
database holds only ciphertext.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from runhouse.den.errors import DenError
from runhouse.exceptions import ConfigError

KEY_FILE = "secret.key"


def _key_from_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


class Vault:
    """Seals and opens secret values with one Fernet key."""

    def __init__(self, key: bytes | str) -> None:
        try:
            self._fernet = Fernet(key)
            self._key = key.encode("ascii") if isinstance(key, str) else bytes(key)
        except (ValueError, TypeError) as e:
            raise ConfigError(
                "the Den secret key must be a Fernet key (32 bytes, url-safe base64); make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
            ) from e

    @classmethod
    def load(cls, data_dir: Path, key: str | None = None) -> Vault:
        """The vault for ``key`` if given, else for the data dir's key file (created if missing)."""
        if key:
            return cls(key)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(_key_from_file(data_dir / KEY_FILE))

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (HMAC-SHA256 of it under this vault's key): every Den with
        the same key file or ``RH_DEN_SECRET_KEY`` derives the same one, and it reveals nothing of
        the vault key itself. The dashboard signs its cookies with one."""
        return hmac.new(self._key, b"runhouse-den subkey:" + purpose.encode(), hashlib.sha256).digest()

    def seal(self, values: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode("ascii")

    def open(self, ciphertext: str) -> dict[str, str]:
        try:
            values: dict[str, str] = json.loads(self._fernet.decrypt(ciphertext.encode("ascii")))
        except InvalidToken as e:
            raise DenError(
                "cannot decrypt stored secret values: this Den runs with a different secret key "
                "than the one they were saved with (RH_DEN_SECRET_KEY or secret.key in its data dir)"
            ) from e
        return values
