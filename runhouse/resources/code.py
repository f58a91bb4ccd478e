"""Describing user code so a worker can rebuild it: by import path, or by value.

Code in an importable module is sent as ``{"module", "qualname", "root"}``: the worker adds
``root`` (the directory that makes the module importable) to its path and imports it, so the
cluster runs the same source file. Code defined in ``__main__``, a notebook or a function body is
pickled by value with cloudpickle.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import cloudpickle


def import_root(module_name: str, file: str) -> str:
    """The sys.path entry from which ``module_name`` (defined in ``file``) is importable."""
    path = Path(file).resolve()
    root = path.parent
    depth = module_name.count(".")
    if path.name == "__init__.py":
        depth += 1
    for _ in range(depth):
        root = root.parent
    return str(root)


def code_spec(obj: Any) -> tuple[dict[str, Any], bytes]:
    """``(spec, payload)`` describing ``obj`` (a function or class) for the worker."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    module = sys.modules.get(module_name or "")
    file = getattr(module, "__file__", None)
    by_value = (
        module_name in (None, "__main__")
        or file is None
        or "<locals>" in qualname
        or "<lambda>" in qualname
        or module_name.startswith("ipykernel")
    )
    if by_value:
        return {"by_value": True, "name": getattr(obj, "__name__", "object")}, cloudpickle.dumps(
            obj, protocol=5
        )
    assert module_name is not None and file is not None
    if module_name == "runhouse" or module_name.startswith("runhouse."):  # installed on every cluster
        return {"module": module_name, "qualname": qualname, "root": None}, b""
    return {"module": module_name, "qualname": qualname, "root": import_root(module_name, file)}, b""


def signature_of(fn: Any) -> dict[str, Any]:
    """What a stub needs to know about a callable: async/generator kind and parameter names."""
    target = inspect.unwrap(fn)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    return {
        "async": inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target),
        "generator": inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target),
        "params": [p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)],
        "var_kwargs": any(v.kind == v.VAR_KEYWORD for v in params.values()),
    }


def class_signature(cls: type) -> dict[str, Any]:
    """Public methods of a class (including class and static methods) with their signatures."""
    methods: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, staticmethod | classmethod):
            func = raw.__func__
        elif inspect.isfunction(raw):
            func = raw
        else:
            continue  # properties and data attributes are read on the live object
        methods[name] = signature_of(func)
        if isinstance(raw, classmethod):
            methods[name]["params"] = methods[name]["params"][1:]
    init = signature_of(cls.__dict__.get("__init__") or inspect.getattr_static(cls, "__init__"))
    init["params"] = init["params"][1:]
    return {"methods": methods, "init": init, "class_name": cls.__name__}
