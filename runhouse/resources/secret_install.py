"""Runs inside a cluster's worker to put a secret in place (sent there by ``Secret.to``).

Only the standard library: it is imported in whichever env the secret is sent to. It reports the
names of what it set, never the values.
"""

from __future__ import annotations

import os
from pathlib import Path


def install_secret(env_vars: dict[str, str], files: dict[str, str]) -> dict[str, list[str]]:
    """Set ``env_vars`` in this worker's environment and write ``files`` (path -> text, mode 0600)."""
    os.environ.update(env_vars)
    written = []
    for name, text in files.items():
        path = Path(os.path.expanduser(name))
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        written.append(str(path))
    return {"env_vars": sorted(env_vars), "files": written}
