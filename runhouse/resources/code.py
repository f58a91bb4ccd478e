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
    try:
        text = str(inspect.signature(target))
    except (TypeError, ValueError):
        text = "(*args, **kwargs)"
    named = {p: v for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
    return {
        "async": inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target),
        "generator": inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target),
        "params": list(named),
        "var_kwargs": any(v.kind == v.VAR_KEYWORD for v in params.values()),
        # for signature(rich=True) and OpenAPI: text, doc, which params are required, their types
        "text": text,
        "doc": inspect.getdoc(target),
        "required": [p for p, v in named.items() if v.default is v.empty],
        "types": {p: _json_type(v.annotation) for p, v in named.items() if _json_type(v.annotation)},
    }


_JSON_TYPES = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
}


def _json_type(annotation: Any) -> str | None:
    """The JSON schema type of a simple annotation (a class or its name as a string), else None."""
    if isinstance(annotation, str):
        return {t.__name__: name for t, name in _JSON_TYPES.items()}.get(annotation.split("[")[0].strip())
    return _JSON_TYPES.get(getattr(annotation, "__origin__", annotation))


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
        if getattr(func, "__module__", None) == "runhouse.resources.module":
            continue  # rh.Module's own API (to, fetch, ...) stays with the stub
        methods[name] = signature_of(func)
        if isinstance(raw, classmethod):
            methods[name]["params"] = methods[name]["params"][1:]
            methods[name]["kind"] = "class"
        elif isinstance(raw, staticmethod):
            methods[name]["kind"] = "static"
        else:
            methods[name]["kind"] = "instance"  # called on an instance; on the class it takes one
    init = signature_of(cls.__dict__.get("__init__") or inspect.getattr_static(cls, "__init__"))
    init["params"] = init["params"][1:]
    return {"methods": methods, "init": init, "class_name": cls.__name__}


def method_view(sig: dict[str, Any]) -> dict[str, Any]:
    """A method's signature as the original system described it: text, async, gen, doc, annotations."""
    return {
        "signature": sig.get("text", "(" + ", ".join(sig.get("params", [])) + ")"),
        "async": bool(sig.get("async")),
        "gen": bool(sig.get("generator")),
        "doc": sig.get("doc"),
        "annotations": dict(sig.get("types", {})),
    }


def openapi_spec(title: str, key: str, methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An OpenAPI 3.0 document for calling ``methods`` of the object ``key`` with JSON bodies
    (``POST /{key}/{method}`` with ``{"data": {"args": [...], "kwargs": {...}}, "serialization": "json"}``)."""
    paths: dict[str, Any] = {}
    for method, sig in sorted(methods.items()):
        params = [p for p in sig.get("params", []) if not (p == "self" and sig.get("kind") == "instance")]
        types = sig.get("types", {})
        kwargs_schema: dict[str, Any] = {
            "type": "object",
            "properties": {p: ({"type": types[p]} if p in types else {}) for p in params},
            "additionalProperties": bool(sig.get("var_kwargs")),
        }
        required = [p for p in sig.get("required", []) if p in params]
        if required:
            kwargs_schema["required"] = required
        doc = sig.get("doc") or ""
        paths[f"/{key}/{method}"] = {
            "post": {
                "operationId": f"{key}.{method}",
                "summary": doc.split("\n")[0],
                "description": doc,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _call_body(kwargs_schema)}},
                },
                "responses": {
                    "200": {
                        "description": "The result envelope: {data, output_type, serialization}",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": "1.0.0"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _call_body(kwargs_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "data": {
                "type": "object",
                "properties": {"args": {"type": "array"}, "kwargs": kwargs_schema},
            },
            "serialization": {"type": "string", "enum": ["json", "pickle", "none"], "default": "json"},
            "run_name": {"type": "string"},
            "stream_logs": {"type": "boolean"},
        },
        "required": ["data"],
    }
