"""``GET|POST /{key}/{method}``: call a method (or the function) held under ``key``.

This is the hot path, so it is plain ASGI (no framework request objects). The request is parsed here (frames, JSON envelope or query string), handed to the worker that
holds the key, and the worker's replies are relayed back by :mod:`relay`. The daemon never
deserializes the call's arguments: they travel to the worker as the bytes the client sent.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qsl

from runhouse.exceptions import BadRequest, WorkerDied
from runhouse.protocol.serialization import check_serialization
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, decode_single_frame
from runhouse.server.registry import Entry
from runhouse.server.routes.relay import relay
from runhouse.server.state import DaemonState
from runhouse.server.workers import PendingCall, WorkerHandle


def _json_call_body(raw: bytes) -> tuple[str, dict[str, Any], bytes]:
    """Parse the JSON envelope; return (serialization, options, payload bytes for the worker)."""
    try:
        envelope = json.loads(raw) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(
            f'body is not valid JSON ({e}); send {{"data": {{"args": [], "kwargs": {{}}}}}}', 400
        ) from e
    if not isinstance(envelope, dict):
        raise BadRequest('body must be a JSON object like {"data": {"args": [], "kwargs": {}}}', 400)
    ser = check_serialization(envelope.get("serialization", "none"))
    data = envelope.get("data")
    if ser == "pickle":
        if not isinstance(data, str):
            raise BadRequest("with serialization 'pickle', data must be a base64 string of the pickle", 400)
        try:
            payload = base64.b64decode(data, validate=True)
        except binascii.Error as e:
            raise BadRequest(f"data is not valid base64: {e}", 400) from e
    elif isinstance(data, str):
        payload = data.encode()  # JSON text, as the original client sends it
    else:
        payload = json.dumps(data if data is not None else {}).encode()
    options = {k: envelope.get(k) for k in ("run_name", "stream_logs", "remote")}
    options["stream_logs"] = bool(options.get("stream_logs"))
    return ser, options, payload


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header(scope: Any, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def handle_call(state: DaemonState, scope: Any, receive: Any, key: str, method: str) -> Any:
    """Parse a call request, submit it to the key's worker; return the ASGI reply to send."""
    raw = await _read_body(receive) if scope["method"] == "POST" else b""
    submitted = submit_call(
        state, scope["method"], _header(scope, b"content-type"), scope["query_string"], raw, key, method
    )
    return await relay(state, *submitted)


def submit_call(
    state: DaemonState, http_method: str, content_type: str, query: bytes, raw: bytes, key: str, method: str
) -> tuple[WorkerHandle, int, PendingCall, str, str | None]:
    """Parse a call and hand it to the worker holding ``key``.

    Returns ``(worker, call id, pending replies, reply format, run name)``; the format is
    ``frames``, ``json`` or ``none`` (see :func:`relay`)."""
    entry = state.registry.get(key)
    fmt: str
    if http_method == "GET":
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        ser = "none"
        options: dict[str, Any] = {
            "stream_logs": False,
            "run_name": params.pop("run_name", None),
            "remote": False,
        }
        payload: Any = json.dumps({"args": [], "kwargs": params}).encode()
        fmt = "none"
    elif http_method == "POST":
        if content_type.startswith(FRAMES_CONTENT_TYPE):
            header, payload = decode_single_frame(raw)
            ser = check_serialization(header.get("serialization", "pickle"))
            options = {
                "stream_logs": bool(header.get("stream_logs", True)),
                "run_name": header.get("run_name"),
                "remote": bool(header.get("remote")),
                "shm": bool(header.get("shm")),
            }
            fmt = "frames"
        else:
            ser, options, payload = _json_call_body(raw)
            fmt = "none" if ser == "none" else "json"
    else:
        raise BadRequest(f"method {http_method} is not allowed here; use GET or POST", 405)
    if options["remote"] and not options.get("run_name"):
        raise BadRequest("remote=True needs a run_name to store the result under", 400)
    worker = state.workers.get(entry.env)
    if worker is None or not worker.alive:
        raise WorkerDied(f"worker {entry.env!r} holding {key!r} is not running; deploy the object again")
    state.calls_served += 1
    state.touch()
    cid, pending = worker.submit("call", key, method, ser, options, body=payload)
    if options["remote"]:
        state.registry.add(options["run_name"], Entry(env=entry.env, kind="result"))
    return worker, cid, pending, fmt, options.get("run_name")
