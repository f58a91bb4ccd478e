"""Parsing the small JSON or frame bodies of the daemon's admin routes."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request

from runhouse.exceptions import BadRequest
from runhouse.protocol.errors import WireError
from runhouse.protocol.serialization import loads_json
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, decode_single_frame
from runhouse.server.registry import check_key


def decode_base64(data: str) -> bytes:
    """Base64 as our client sends it, or MIME base64 as the original client did
    (``base64.encodebytes``: a newline every 76 characters). Line breaks are the only
    extra characters accepted; anything else outside the alphabet is refused."""
    if "\n" in data:
        data = data.replace("\r\n", "").replace("\n", "")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"data is not valid base64: {e}", 400) from None


async def json_body(request: Request, required: tuple[str, ...] = ()) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = loads_json(raw, "body") if raw else {}
    except WireError as e:
        raise BadRequest(str(e), 400) from None
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
    return check_key(body.get(name), name)


def check_env_vars(value: Any) -> dict[str, str]:
    """Environment variables from a request: names and values are strings a process environment
    can hold (no '=' in names, no NUL bytes)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("'env_vars' must be a mapping of names to string values", 400)
    for name, val in value.items():
        if not name or "=" in name or "\0" in name or not isinstance(val, str) or "\0" in val:
            raise BadRequest(
                f"env var {name!r:.80} must have a name without '=' or NUL and a string value (got {val!r:.80})",
                400,
            )
    return dict(value)
