"""How call arguments and results are turned into bytes and back.

Three names travel in the ``serialization`` field of a request or reply:

* ``json``   -- UTF-8 JSON text. Safe from anyone; limited to JSON types.
* ``pickle`` -- cloudpickle (protocol 5) on the way out, ``pickle.loads`` on the way in. Only
  accepted by the daemon from authenticated callers, because unpickling runs code. Buffers of
  1 MiB or more (numpy arrays, bytes) travel out of band, after the pickle stream, so they are
  never copied into it and are unpickled in place::

      b"RHP5" | u32 n | layout (n bytes of JSON) | pickle stream | buffer 1 | buffer 2 ...

  The layout lists the lengths of the stream and each buffer, and which buffers were put in
  same-host shared memory instead (see :mod:`runhouse.protocol.shm`). A payload without large
  buffers is a plain pickle.
* ``none``   -- the HTTP body itself is plain JSON (curl-friendly); inside our own processes it
  behaves like ``json``.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import cloudpickle

from runhouse.protocol.arena import outbox, read_segment
from runhouse.protocol.errors import WireError

SERIALIZATIONS = ("json", "pickle", "none")
OOB_MAGIC = b"RHP5"
OOB_MIN_BYTES = 1 << 20
SHM_MIN_BYTES = 8 << 20
_COUNT = struct.Struct(">I")

Buffer = bytes | bytearray | memoryview


def check_serialization(name: Any) -> str:
    if name not in SERIALIZATIONS:
        raise WireError(f"unknown serialization {name!r}: use one of {', '.join(SERIALIZATIONS)}")
    return str(name)


def _dumps(obj: Any, callback: Any, large: list[pickle.PickleBuffer]) -> bytes:
    """The standard pickler when it can do the job (several times faster for small values), else
    cloudpickle: for lambdas, closures and anything defined in ``__main__`` or a notebook, which the
    other side cannot import and so must receive by value."""
    try:
        stream = pickle.dumps(obj, protocol=5, buffer_callback=callback)
        if b"__main__" not in stream:
            return stream
    except Exception:  # unpicklable by reference: cloudpickle decides below, and reports errors
        pass
    large.clear()
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=callback)


def serialize_parts(obj: Any, serialization: str, shm: Path | None = None) -> list[Buffer]:
    """Encode ``obj`` as a list of buffers to send back to back (large buffers are not copied).

    With ``shm`` (a same-host segment folder, see :mod:`runhouse.protocol.shm`), large buffers
    are written to shared memory and only their names are sent.
    """
    if serialization == "pickle":
        large: list[pickle.PickleBuffer] = []

        def keep_small_in_band(buffer: pickle.PickleBuffer) -> bool:
            if buffer.raw().nbytes < OOB_MIN_BYTES:
                return True
            large.append(buffer)
            return False

        stream = _dumps(obj, keep_small_in_band, large)
        if not large:
            return [stream]
        views = [b.raw() for b in large]
        segments = {}
        if shm is not None:
            for i, view in enumerate(views):
                if view.nbytes >= SHM_MIN_BYTES:
                    try:
                        segments[str(i)] = outbox(shm).write(view)
                    except OSError:  # /dev/shm full or too small: this buffer goes inline
                        continue
        layout = json.dumps({"lengths": [len(stream), *(v.nbytes for v in views)], "shm": segments}).encode()
        inline = [v for i, v in enumerate(views) if str(i) not in segments]
        return [OOB_MAGIC + _COUNT.pack(len(layout)), layout, stream, *inline]
    check_serialization(serialization)
    try:
        return [json.dumps(obj).encode()]
    except (TypeError, ValueError) as e:
        raise WireError(
            f"value of type {type(obj).__name__} cannot be sent as JSON ({e}); use serialization='pickle'"
        ) from e


def serialize(obj: Any, serialization: str) -> bytes:
    """Encode ``obj`` into one bytes object; raise :class:`WireError` when it cannot be encoded."""
    parts = serialize_parts(obj, serialization)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # type: ignore[return-value]


def segments_of(data: Buffer) -> list[str]:
    """Names of the shared-memory segments a payload refers to (to discard them if unread)."""
    view = memoryview(data)
    if view[:4] != OOB_MAGIC:
        return []
    (size,) = _COUNT.unpack_from(view, 4)
    return list(json.loads(bytes(view[8 : 8 + size])).get("shm", {}).values())


def _loads_oob(view: memoryview, shm: Path | None) -> Any:
    (size,) = _COUNT.unpack_from(view, 4)
    layout = json.loads(bytes(view[8 : 8 + size]))
    lengths, segments = layout["lengths"], layout.get("shm", {})
    if segments and shm is None:
        raise WireError("payload refers to shared memory, which is only usable on the same host")
    pos = 8 + size
    stream = view[pos : pos + lengths[0]]
    pos += lengths[0]
    buffers = []
    for i, length in enumerate(lengths[1:]):
        if str(i) in segments:
            assert shm is not None
            buffers.append(read_segment(shm, segments[str(i)], length))
        else:
            buffers.append(view[pos : pos + length])
            pos += length
    if pos != len(view):
        raise WireError("out-of-band pickle payload has the wrong length")
    return pickle.loads(stream, buffers=buffers)


def deserialize(data: bytes | bytearray | memoryview, serialization: str, shm: Path | None = None) -> Any:
    """Decode bytes made by :func:`serialize` (or by any JSON/pickle producer)."""
    if serialization == "pickle":
        try:
            view = memoryview(data)
            if view[:4] == OOB_MAGIC:
                return _loads_oob(view, shm)
            return pickle.loads(view)
        except WireError:
            raise
        except Exception as e:  # any unpickling failure is bad input to us
            raise WireError(f"payload is not a valid pickle: {type(e).__name__}: {e}") from e
    check_serialization(serialization)
    if not data:
        return None
    return loads_json(bytes(data) if isinstance(data, memoryview) else data, "payload")


def loads_json(raw: bytes | bytearray | str, what: str) -> Any:
    """``json.loads`` for bytes from outside: every way it can fail (bad UTF-8 or syntax, nesting
    past the recursion limit, integers past Python's digit limit) is a :class:`WireError`."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise WireError(f"{what} is not valid JSON: {reason}") from None
