"""Rebuilding user code inside a worker from what the client sent: an import path or a pickle.

Code sent by import path is imported from its root directory; when the source file changed since
the last import, the module is reloaded (its stale bytecode cache removed first), so re-running
``.to()`` after an edit picks up the new code at once.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pickle
import sys
from types import ModuleType
from typing import Any

_loaded_stamp: dict[str, tuple[int, int]] = {}


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def import_module_fresh(module: str, root: str | None) -> ModuleType:
    """Import ``module`` (with ``root`` on sys.path), reloading it if its source changed."""
    if root and root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    mod = sys.modules.get(module)
    if mod is None:
        mod = importlib.import_module(module)
    else:
        path = getattr(mod, "__file__", None)
        if path and os.path.exists(path) and _loaded_stamp.get(module) != _stamp(path):
            cached = importlib.util.cache_from_source(path) if path.endswith(".py") else None
            if cached and os.path.exists(cached):
                with contextlib.suppress(OSError):
                    os.unlink(cached)
            mod = importlib.reload(mod)
    path = getattr(mod, "__file__", None)
    if path and os.path.exists(path):
        _loaded_stamp[module] = _stamp(path)
    return mod


def resolve(spec: dict[str, Any], body: bytes | bytearray | None) -> Any:
    """The object a deploy spec names: ``{"module", "qualname", "root"}`` or a pickle in ``body``."""
    if spec.get("by_value"):
        if body is None:
            raise ValueError("deploy by value needs the pickled object in the body")
        return pickle.loads(body)
    module = import_module_fresh(spec["module"], spec.get("root"))
    obj: Any = module
    for part in spec["qualname"].split("."):
        obj = getattr(obj, part)
    return obj
