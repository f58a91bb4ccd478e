"""The event loop the daemon and workers run on: uvloop where installed, asyncio otherwise.

uvloop is a dependency of runhouse on Linux and macOS; on other platforms the standard loop
is used and everything works, only slower.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any


def has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    if has_uvloop():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
