"""``GET /{key}/openapi.json`` and ``GET /{key}/docs``: each deployed object describes itself.

The document is built from the signature the client sent at deploy time (the registry entry's
``config["signature"]``: a function's parameters, or a class's public methods), so that a caller
in any language can see which methods exist and how to send their arguments: a JSON envelope
``{"data": {"args": [...], "kwargs": {...}}, "serialization": "json"}`` on ``POST /{key}/{method}``,
or the keyword arguments as a query string on ``GET``. The docs page is plain HTML (no scripts,
nothing fetched from elsewhere). Both are read routes: any caller who may call the object may read
them. An object with a method of its own named ``docs`` keeps it: ``GET /{key}/docs`` calls it.
"""

from __future__ import annotations

import html
import json
from typing import Any

from runhouse.server.registry import Entry
from runhouse.server.routes.relay import Reply
from runhouse.server.state import DaemonState

SPEC_METHOD = "openapi.json"
DOCS_METHOD = "docs"

_ENVELOPE = {
    "type": "object",
    "properties": {
        "data": {"nullable": True},
        "output_type": {"type": "string", "enum": ["result_serialized", "exception", "success", "stdout"]},
        "serialization": {"type": "string", "nullable": True},
    },
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}, "status": {"type": "integer"}},
}


def methods_of(entry: Entry) -> dict[str, dict[str, Any]]:
    """Method name -> signature (``params``, ``var_kwargs``, ``async``, ``generator``)."""
    signature = entry.config.get("signature") if isinstance(entry.config, dict) else None
    if not isinstance(signature, dict):
        return {"call": {"params": [], "var_kwargs": True}} if entry.kind == "function" else {}
    methods = signature.get("methods")
    if isinstance(methods, dict):
        return {str(name): sig for name, sig in methods.items() if isinstance(sig, dict)}
    return {"call": signature}


def describe_route(state: DaemonState, key: str, method: str) -> Reply | None:
    """The reply for ``GET /{key}/openapi.json`` or ``/docs``; None when the request is a call
    (another method name, or an object with a ``docs`` method of its own)."""
    if method not in (SPEC_METHOD, DOCS_METHOD):
        return None
    entry = state.registry.get(key)  # an unknown key: 404 either way
    if method == DOCS_METHOD:
        if DOCS_METHOD in methods_of(entry):
            return None
        return Reply([docs_page(key, entry).encode()], "text/html; charset=utf-8")
    return Reply([json.dumps(openapi_spec(key, entry)).encode()], "application/json")


def _params(sig: dict[str, Any]) -> list[str]:
    params = sig.get("params")
    return [str(p) for p in params] if isinstance(params, list) else []


def _operations(key: str, method: str, sig: dict[str, Any]) -> dict[str, Any]:
    params = _params(sig)
    kwargs_schema = {
        "type": "object",
        "properties": {p: {} for p in params},
        "additionalProperties": bool(sig.get("var_kwargs")),
    }
    body = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "properties": {
                    "args": {"type": "array", "items": {}, "maxItems": len(params)},
                    "kwargs": kwargs_schema,
                },
            },
            "serialization": {
                "type": "string",
                "nullable": True,
                "enum": ["json", "none"],
                "default": "none",
            },
            "stream_logs": {"type": "boolean", "default": False},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
        },
    }
    errors = {
        "404": {
            "description": "no such object or method",
            "content": {"application/json": {"schema": _ERROR}},
        },
        "422": {
            "description": "arguments that do not fit the signature",
            "content": {"application/json": {"schema": _ERROR}},
        },
        "500": {
            "description": "the method raised: an exception envelope",
            "content": {"application/json": {"schema": _ENVELOPE}},
        },
    }
    ok = {
        "description": "serialization json: the result envelope (data is the result as JSON text); none: the bare JSON result",
        "content": {"application/json": {"schema": _ENVELOPE}},
    }
    summary = f"{key}.{method}({', '.join(params)}{', **kwargs' if sig.get('var_kwargs') else ''})"
    if sig.get("generator"):
        summary += " (a generator: items stream as NDJSON envelopes)"
    return {
        "post": {
            "operationId": f"{key}__{method}",
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": ok, **errors},
        },
        "get": {
            "operationId": f"{key}__{method}__get",
            "summary": summary + " with keyword arguments as query text (strings)",
            "parameters": [
                {"name": p, "in": "query", "required": False, "schema": {"type": "string"}} for p in params
            ]
            + [
                {
                    "name": "serialization",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["json", "none"], "default": "json"},
                }
            ],
            "responses": {"200": ok, **errors},
        },
    }


def openapi_spec(key: str, entry: Entry) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the object held under ``key``."""
    paths = {f"/{key}/{name}": _operations(key, name, sig) for name, sig in sorted(methods_of(entry).items())}
    signature = entry.config.get("signature") if isinstance(entry.config, dict) else None
    described = signature.get("class_name") if isinstance(signature, dict) else None
    return {
        "openapi": "3.0.0",
        "info": {
            "title": key,
            "version": "1",
            "description": f"{entry.kind} {described or key} in env {entry.env}. Every request needs "
            "'Authorization: Bearer <token>'.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def docs_page(key: str, entry: Entry) -> str:
    """A small HTML page listing the object's methods, their parameters and a curl line for each."""
    esc = html.escape
    items = []
    for name, sig in sorted(methods_of(entry).items()):
        params = _params(sig) + (["**kwargs"] if sig.get("var_kwargs") else [])
        example = json.dumps(
            {"data": {"args": [], "kwargs": {p: "..." for p in _params(sig)}}, "serialization": "none"}
        )
        items.append(
            f"<li><code>POST /{esc(key)}/{esc(name)}</code> ({esc(', '.join(params)) or 'no parameters'})"
            f"<pre>curl -H 'Authorization: Bearer $TOKEN' -H 'Content-Type: application/json' "
            f"-d '{esc(example)}' $URL/{esc(key)}/{esc(name)}</pre></li>"
        )
    body = "\n".join(items) or "<li>no methods: this object is data (read it with GET /object?key=...)</li>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(key)}</title></head><body>"
        f"<h1>{esc(key)}</h1><p>{esc(entry.kind)} in env {esc(entry.env)}; "
        f"machine-readable: <a href='openapi.json'>openapi.json</a></p><ul>\n{body}\n</ul></body></html>"
    )
