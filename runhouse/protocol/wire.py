"""HTTP formats between clients and the daemon.

Two request bodies are accepted on ``POST /{key}/{method}``:

1. **JSON envelope** (``Content-Type: application/json``), compatible with the original system::

       {"data": <args>, "serialization": "json" | "pickle" | "none",
        "run_name": "optional", "stream_logs": false, "remote": false}

   ``data`` is ``{"args": [...], "kwargs": {...}}``: as a JSON object or JSON text for ``json``
   and ``none`` (``null`` is ``none``, as in the original), as base64 of a pickle for ``pickle``
   (plain or MIME base64 with line breaks, as the original client sent it). The reply is one
   envelope ``{"data", "output_type", "serialization"}``, or with ``serialization: none`` the bare
   JSON result. With ``stream_logs: true`` and output, the reply is NDJSON: one envelope per line,
   ``output_type: "stdout"`` lines first (their ``data`` a list of lines, ends kept), the result
   last. ``GET /{key}/{method}?a=1`` takes the query string as kwargs, except ``serialization``
   (``json``, the default: the envelope; ``none``: the bare result) and ``run_name``.

2. **Frames** (``Content-Type: application/vnd.rh.frames``), what our client sends. A frame is::

       u32 big-endian header length | header (JSON object) | payload (header["size"] bytes)

   A request is one frame whose header carries the call options and whose payload is the
   serialized ``{"args", "kwargs"}``. The reply is a sequence of frames, each with an
   ``output_type``: ``stdout`` (text printed by the call), ``result_stream`` (one generator item),
   then exactly one of ``result_serialized`` / ``exception`` / ``success``. Binary payloads travel
   without base64, so large arrays move at memory speed.

Output types are the values of :class:`OutputType`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runhouse.protocol.errors import WireError
from runhouse.protocol.serialization import loads_json

PROTOCOL_VERSION = 1
FRAMES_CONTENT_TYPE = "application/vnd.rh.frames"
NDJSON_CONTENT_TYPE = "application/x-ndjson"
_U32 = struct.Struct(">I")
MAX_HEADER = 1 << 20


class OutputType:
    RESULT = "result_serialized"
    STREAM_ITEM = "result_stream"
    EXCEPTION = "exception"
    SUCCESS = "success"
    STDOUT = "stdout"
    CONFIG = "config"

    FINAL = frozenset({RESULT, EXCEPTION, SUCCESS, CONFIG})


# Reserved method names for attribute access on a live object (user names never start with __rh_).
GETATTR = "__rh_getattr__"
SETATTR = "__rh_setattr__"
# Reserved method name for a map chunk: args (method, [args tuple per item], kwargs); the worker runs
# ``method`` once per item and answers [results, None] or [results before the failure, [index, error]].
MAP = "__rh_map__"


@dataclass(frozen=True)
class CallOptions:
    """Per-call options that travel in a request header, never mixed into user kwargs."""

    serialization: str = "pickle"
    run_name: str | None = None
    stream_logs: bool = True
    remote: bool = False  # keep the result on the cluster and return a reference
    shm: bool = False  # same host: large buffers may travel through shared memory
    timeout: float | None = None  # seconds; past them the cluster cancels the call (TimeoutError)

    def header(self) -> dict[str, Any]:
        return {
            "serialization": self.serialization,
            "run_name": self.run_name,
            "stream_logs": self.stream_logs,
            "remote": self.remote,
            "shm": self.shm,
            "timeout": self.timeout,
        }


# Frame headers repeat (the same stub sends the same options every call), so both directions keep
# a small cache of header bytes <-> dicts. Big or unhashable headers are not cached.
_CACHE_ENTRIES = 256
_CACHE_MAX_BYTES = 512
_ENCODED: dict[Any, bytes] = {}
_DECODED: dict[bytes, dict[str, Any]] = {}
_SCALARS = frozenset({str, int, float, bool, type(None)})


def encode_frame(header: dict[str, Any], payload: Any = b"") -> list[Any]:
    """A frame as a list of buffers (header prefix, payload parts), ready for ``writelines``.

    ``payload`` is one buffer or a list of buffers (as :func:`serialize_parts` makes)."""
    parts = payload if isinstance(payload, list) else [payload]
    size = sum(len(p) if not isinstance(p, memoryview) else p.nbytes for p in parts)
    try:  # a stub sends the same header on every call: encode it once
        key: Any = (tuple(header.items()), size)
        prefix = _ENCODED.get(key)
    except TypeError:  # a value that cannot be hashed (a dict): encode every time
        key = prefix = None
    if prefix is None:
        head = json.dumps(dict(header, size=size), separators=(",", ":")).encode()
        prefix = _U32.pack(len(head)) + head
        if key is not None and len(head) <= _CACHE_MAX_BYTES:
            if len(_ENCODED) >= _CACHE_ENTRIES:
                _ENCODED.clear()
            _ENCODED[key] = prefix
    return [prefix, *(p for p in parts if len(p))]


def frame_bytes(header: dict[str, Any], payload: Any = b"") -> bytes:
    return b"".join(encode_frame(header, payload))


def decode_single_frame(body: bytes | bytearray | memoryview) -> tuple[dict[str, Any], memoryview]:
    """Split a request body holding exactly one frame into header and payload."""
    view = memoryview(body)
    frames = list(_iter_frames(view, strict=True))
    if len(frames) != 1:
        raise WireError(f"request body must hold one frame, found {len(frames)}")
    return frames[0]


def _parse_header(raw: bytes | memoryview) -> dict[str, Any]:
    raw = bytes(raw)
    cached = _DECODED.get(raw)
    if cached is not None:
        return dict(cached)  # a copy: callers may change what they get
    header = _parse_new_header(raw)
    if len(raw) <= _CACHE_MAX_BYTES and all(type(v) in _SCALARS for v in header.values()):
        if len(_DECODED) >= _CACHE_ENTRIES:
            _DECODED.clear()
        _DECODED[raw] = dict(header)
    return header


def _parse_new_header(raw: bytes) -> dict[str, Any]:
    header = loads_json(raw, "frame header")
    if not isinstance(header, dict):
        raise WireError("frame header must be a JSON object")
    size = header.setdefault("size", 0)
    if type(size) is not int or size < 0:
        raise WireError("frame header 'size' must be a non-negative integer")
    return header


def _iter_frames(view: memoryview, strict: bool) -> Iterator[tuple[dict[str, Any], memoryview]]:
    pos = 0
    while pos < len(view):
        if len(view) - pos < 4:
            raise WireError("truncated frame: missing header length")
        (hlen,) = _U32.unpack_from(view, pos)
        if hlen > MAX_HEADER:
            raise WireError(f"frame header of {hlen} bytes is larger than {MAX_HEADER}")
        if pos + 4 + hlen > len(view):
            raise WireError("truncated frame header")
        header = _parse_header(view[pos + 4 : pos + 4 + hlen])
        start = pos + 4 + hlen
        end = start + header["size"]
        if end > len(view):
            raise WireError("truncated frame payload")
        yield header, view[start:end]
        pos = end


class FrameDecoder:
    """Incremental decoder for a stream of frames: ``feed`` bytes, get back whole frames.

    A payload that arrives inside one chunk is returned as a view of that chunk (no copy);
    one spread over several chunks is joined once, into a writable bytearray.
    """

    def __init__(self) -> None:
        self._head = bytearray()  # bytes of a frame header not yet complete
        self._header: dict[str, Any] | None = None
        self._chunks: list[memoryview] = []
        self._have = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[dict[str, Any], Any]]:
        out: list[tuple[dict[str, Any], Any]] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view) or (self._header is not None and self._header["size"] == self._have):
            if self._header is None:
                pos = self._read_header(view, pos)
                if self._header is None:
                    break
            need = self._header["size"] - self._have
            if need:
                take = view[pos : pos + need]
                pos += len(take)
                self._chunks.append(take)
                self._have += len(take)
            if self._have == self._header["size"]:
                chunks = self._chunks
                if not chunks:
                    payload: Any = b""
                elif len(chunks) == 1:
                    payload = chunks[0]
                else:
                    payload = bytearray(self._have)
                    at = 0
                    for chunk in chunks:
                        payload[at : at + len(chunk)] = chunk
                        at += len(chunk)
                out.append((self._header, payload))
                self._header, self._chunks, self._have = None, [], 0
        return out

    def _read_header(self, view: memoryview, pos: int) -> int:
        """Take header bytes from ``view``; set ``self._header`` once complete. Returns the new pos."""
        if not self._head and len(view) - pos >= 4:
            (hlen,) = _U32.unpack_from(view, pos)
            if hlen > MAX_HEADER:
                raise WireError(f"frame header of {hlen} bytes is larger than {MAX_HEADER}")
            if len(view) - pos >= 4 + hlen:  # the common case: the whole header is here
                self._header = _parse_header(view[pos + 4 : pos + 4 + hlen])
                return pos + 4 + hlen
        while pos < len(view):
            if len(self._head) < 4:
                take = min(4 - len(self._head), len(view) - pos)
                self._head += view[pos : pos + take]
                pos += take
                continue
            (hlen,) = _U32.unpack_from(self._head, 0)
            if hlen > MAX_HEADER:
                raise WireError(f"frame header of {hlen} bytes is larger than {MAX_HEADER}")
            take = min(4 + hlen - len(self._head), len(view) - pos)
            self._head += view[pos : pos + take]
            pos += take
            if len(self._head) == 4 + hlen:
                self._header = _parse_header(memoryview(self._head)[4:])
                self._head = bytearray()
                break
        return pos

    def finish(self) -> None:
        if self._header is not None or self._head:
            raise WireError("reply ended in the middle of a frame")


def json_envelope(output_type: str, data: Any, serialization: str) -> bytes:
    return json.dumps({"data": data, "output_type": output_type, "serialization": serialization}).encode()
