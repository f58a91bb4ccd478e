"""``GET|POST /{key}/{method}``: call a method (or the function) held under ``key``.

This is the hot path, so it is plain ASGI (no framework request objects). The request is parsed here (frames, JSON envelope or query string), handed to the worker that
holds the key, and the worker's replies are relayed back by :mod:`relay`. The daemon never
deserializes the call's arguments: they travel to the worker as the bytes the client sent.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from runhouse.exceptions import AuthError, BadRequest, WorkerDied
from runhouse.protocol.errors import WireError
from runhouse.protocol.messages import Call, CallOptionsDict
from runhouse.protocol.serialization import check_serialization, loads_json
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, GETATTR, SETATTR, decode_single_frame
from runhouse.server.denauth import Caller
from runhouse.server.registry import Entry, check_key
from runhouse.server.routes._body import decode_base64
from runhouse.server.routes.relay import relay
from runhouse.server.state import DaemonState
from runhouse.server.workers import PendingCall, WorkerHandle

MAX_CALL_TIMEOUT_S = 30 * 24 * 3600


def _json_call_body(raw: bytes | bytearray) -> tuple[str, CallOptionsDict, bytes]:
    """Parse the JSON envelope; return (serialization, options, payload bytes for the worker)."""
    try:
        envelope = loads_json(raw, "body") if raw else {}
    except WireError as e:
        raise BadRequest(f'{e}; send {{"data": {{"args": [], "kwargs": {{}}}}}}', 400) from None
    if not isinstance(envelope, dict):
        raise BadRequest('body must be a JSON object like {"data": {"args": [], "kwargs": {}}}', 400)
    ser = check_serialization(envelope.get("serialization") or "none")  # null: none, as the original
    data = envelope.get("data")
    if ser == "pickle":
        if not isinstance(data, str):
            raise BadRequest("with serialization 'pickle', data must be a base64 string of the pickle", 400)
        payload = decode_base64(data)
    elif isinstance(data, str):
        payload = data.encode()  # JSON text, as the original client sends it
    else:
        try:
            payload = json.dumps(data if data is not None else {}).encode()
        except (ValueError, RecursionError):
            raise BadRequest("data is nested too deeply or holds numbers too large to pass on", 400) from None
    return ser, call_options(envelope, stream_default=False), payload


def _query_call(query: bytes) -> tuple[str, CallOptionsDict, bytes]:
    """``GET /{key}/{method}?a=1``: the query string is the kwargs, except ``serialization``
    (``json``, the default, answers with the result envelope; ``none`` with the bare JSON result)
    and ``run_name``, which are call options, as in the original system."""
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    ser = check_serialization(params.pop("serialization", None) or "json")
    if ser == "pickle":
        raise BadRequest(
            "a GET call takes its arguments as query text: ask for serialization 'json' or 'none' "
            "(POST a JSON envelope to use pickle)",
            400,
        )
    options = call_options({"run_name": params.pop("run_name", None)}, stream_default=False)
    return ser, options, json.dumps({"args": [], "kwargs": params}).encode()


def _flag(fields: dict[str, Any], name: str, default: bool) -> bool:
    value = fields.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{name!r} must be true or false (got {value!r})", 400)
    return value


def call_options(fields: dict[str, Any], stream_default: bool) -> CallOptionsDict:
    """The call options a request carries (frame header or JSON envelope), each checked here so
    that nothing malformed reaches a worker."""
    run_name = fields.get("run_name")
    if run_name is not None:
        check_key(run_name, "run_name")
    timeout = fields.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_CALL_TIMEOUT_S
    ):
        raise BadRequest(
            f"'timeout' must be a number of seconds above 0 and at most {MAX_CALL_TIMEOUT_S}", 400
        )
    return {
        "stream_logs": _flag(fields, "stream_logs", stream_default),
        "run_name": run_name,
        "remote": _flag(fields, "remote", False),
        "shm": _flag(fields, "shm", False),
        "timeout": timeout,
    }


def check_read_access(ser: str, options: CallOptionsDict, method: str, payload: Any) -> None:
    """What a caller with read access may not do on the call route (see ``docs/security.md``):
    send pickles (unpickling runs code), store a result or name a run (both write to the
    cluster), set attributes, read private ones, or use this host's shared memory."""
    if ser == "pickle":
        raise AuthError(
            "read access allows data-only calls: send the arguments with serialization 'json' "
            "(pickles are code, and need write access to the cluster)",
            403,
        )
    if options["remote"] or options["run_name"] is not None:
        raise AuthError("read access cannot keep results or name runs on the cluster (remote/run_name)", 403)
    if options["shm"]:
        raise AuthError("read access cannot pass data through the cluster's shared memory", 403)
    if method == SETATTR:
        raise AuthError("read access cannot set attributes of objects on the cluster", 403)
    if method == GETATTR:
        try:
            data = loads_json(bytes(payload), "call data") if payload else {}
        except WireError as e:
            raise BadRequest(str(e), 400) from None
        args = data.get("args") if isinstance(data, dict) else None
        kwargs = data.get("kwargs") if isinstance(data, dict) else None
        name = args[0] if isinstance(args, list) and args else (kwargs or {}).get("name")
        if not isinstance(name, str) or name.startswith("_"):
            raise AuthError(f"read access can read public attributes only (got {name!r})", 403)


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
        state,
        scope["rh.caller"],
        scope["method"],
        _header(scope, b"content-type"),
        scope["query_string"],
        raw,
        key,
        method,
    )
    return await relay(state, *submitted)


def submit_call(
    state: DaemonState,
    caller: Caller,
    http_method: str,
    content_type: str,
    query: bytes,
    raw: bytes | bytearray,
    key: str,
    method: str,
) -> tuple[WorkerHandle, int, PendingCall, str, str | None]:
    """Parse a call, check it against the caller's access, and hand it to the worker holding ``key``.

    Returns ``(worker, call id, pending replies, reply format, run name)``; the format is
    ``frames``, ``json`` or ``none`` (see :func:`relay`)."""
    entry = state.registry.get(key)
    fmt: str
    payload: Any
    if http_method == "GET":
        ser, options, payload = _query_call(query)
        fmt = "none" if ser == "none" else "json"
    elif http_method == "POST":
        if content_type.startswith(FRAMES_CONTENT_TYPE):
            header, payload = decode_single_frame(raw)
            ser = check_serialization(header.get("serialization", "pickle"))
            options = call_options(header, stream_default=True)
            fmt = "frames"
        else:
            ser, options, payload = _json_call_body(raw)
            fmt = "none" if ser == "none" else "json"
    else:
        raise BadRequest(f"method {http_method} is not allowed here; use GET or POST", 405)
    if caller.access != "write":
        check_read_access(ser, options, method, payload)
    if options["remote"] and options["run_name"] is None:
        raise BadRequest("remote=True needs a run_name to store the result under", 400)
    worker = state.workers.get(entry.env)
    if worker is None or not worker.alive:
        raise WorkerDied(f"worker {entry.env!r} holding {key!r} is not running; deploy the object again")
    state.calls_served += 1
    state.touch()
    cid, pending = worker.submit(lambda cid: Call(cid, key, method, ser, options), payload)
    run_name = options["run_name"]
    if options["remote"] and run_name is not None:  # (checked above: remote needs a run name)
        state.registry.add(run_name, Entry(env=entry.env, kind="result"))
    return worker, cid, pending, fmt, run_name
