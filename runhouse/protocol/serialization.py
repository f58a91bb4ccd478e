"""How call arguments and results are turned into bytes and back.

Three names travel in the ``serialization`` field of a request or reply:

* ``json``   -- UTF-8 JSON text. Safe from anyone; limited to JSON types.
* ``pickle`` -- cloudpickle (protocol 5) on the way out, ``pickle.loads`` on the way in. Only
  accepted by the daemon from authenticated callers, because unpickling runs code.
* ``none``   -- the HTTP body itself is plain JSON (curl-friendly); inside our own processes it
  behaves like ``json``.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import cloudpickle

from runhouse.protocol.errors import WireError

SERIALIZATIONS = ("json", "pickle", "none")


def check_serialization(name: Any) -> str:
    if name not in SERIALIZATIONS:
        raise WireError(f"unknown serialization {name!r}: use one of {', '.join(SERIALIZATIONS)}")
    return str(name)


def serialize(obj: Any, serialization: str) -> bytes:
    """Encode ``obj``; raise :class:`WireError` when it cannot be encoded that way."""
    if serialization == "pickle":
        return cloudpickle.dumps(obj, protocol=5)
    check_serialization(serialization)
    try:
        return json.dumps(obj).encode()
    except (TypeError, ValueError) as e:
        raise WireError(
            f"value of type {type(obj).__name__} cannot be sent as JSON ({e}); use serialization='pickle'"
        ) from e


def deserialize(data: bytes | bytearray | memoryview, serialization: str) -> Any:
    """Decode bytes made by :func:`serialize` (or by any JSON/pickle producer)."""
    if serialization == "pickle":
        try:
            return pickle.loads(data)
        except Exception as e:  # any unpickling failure is bad input to us
            raise WireError(f"payload is not a valid pickle: {type(e).__name__}: {e}") from e
    check_serialization(serialization)
    if not data:
        return None
    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"payload is not valid JSON: {e}") from e
