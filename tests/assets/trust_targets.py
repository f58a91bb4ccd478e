"""Objects the trust-boundary tests deploy: code that accepts any JSON input without raising, so
that every error a test sees comes from the daemon, never from the user's code."""

from __future__ import annotations

import os
from typing import Any


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


class Box:
    """A live object with a public attribute and a private one."""

    def __init__(self) -> None:
        self.value = 1
        self._secret = "private"

    def get(self) -> int:
        return self.value


def touch(path: str) -> None:
    """Made into a pickle that runs it on unpickling: proof of whether a payload was unpickled."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))


class RunsOnUnpickle:
    """Unpickling this object calls ``touch(path)``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (touch, (self.path,))
