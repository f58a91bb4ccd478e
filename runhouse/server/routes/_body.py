"""Parsing the small JSON or frame bodies of the daemon's admin routes."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from runhouse.exceptions import BadRequest
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, decode_single_frame


async def json_body(request: Request, required: tuple[str, ...] = ()) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"body is not valid JSON: {e}", 400) from e
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", 400)
    missing = [k for k in required if k not in body]
    if missing:
        raise BadRequest(f"body is missing {', '.join(repr(m) for m in missing)}", 400)
    return body


async def frame_or_json(request: Request, required: tuple[str, ...] = ()) -> tuple[dict[str, Any], Any, bool]:
    """``(fields, payload, is_frames)`` from a frames body or a JSON body with a ``data`` field."""
    if request.headers.get("content-type", "").startswith(FRAMES_CONTENT_TYPE):
        header, payload = decode_single_frame(await request.body())
        missing = [k for k in required if k not in header]
        if missing:
            raise BadRequest(f"frame header is missing {', '.join(repr(m) for m in missing)}", 400)
        return header, payload, True
    body = await json_body(request, required)
    return body, None, False


def key_field(body: dict[str, Any], name: str = "key") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or "/" in value or len(value) > 256:
        raise BadRequest(f"{name!r} must be a non-empty name without '/' (got {value!r})", 400)
    return value
