"""Sans-I/O encoding of requests and decoding of replies, shared by the sync and async paths.

Nothing here touches a socket: :func:`encode_call` builds a request body, :class:`ReplyDecoder`
turns reply bytes into :class:`Event` objects, and :func:`raise_for_error_body` turns a JSON error
reply into the right exception. The transports (:mod:`transport`) only move bytes, so the call
logic is written once.
"""

from __future__ import annotations

import contextlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runhouse import exceptions as exc_mod
from runhouse.exceptions import RemoteException, ServerError, WorkerDied, error_for_status
from runhouse.protocol.serialization import deserialize, serialize_parts
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, CallOptions, FrameDecoder, OutputType, encode_frame

FRAMES_HEADERS = {"Content-Type": FRAMES_CONTENT_TYPE, "Accept": FRAMES_CONTENT_TYPE}


@dataclass(frozen=True)
class Event:
    kind: str  # stdout | item | result | success | config
    value: Any = None


def encode_call(
    args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], options: CallOptions, shm: Path | None = None
) -> list[Any]:
    """Request body parts for a call: one frame with the options and the serialized args."""
    payload = serialize_parts({"args": list(args), "kwargs": kwargs}, options.serialization, shm)
    return encode_frame(options.header(), payload)


def encode_request(fields: dict[str, Any], payload: Any = b"") -> list[Any]:
    return encode_frame(fields, payload)


def rebuild_exception(meta: dict[str, Any], payload: bytes) -> BaseException:
    """The remote exception with its own type if it can be unpickled, else a RemoteException."""
    error = meta.get("error") or {}
    type_name = str(error.get("type", "Exception"))
    message = str(error.get("message", ""))
    tb = str(error.get("traceback", ""))
    if type_name.startswith("runhouse.exceptions."):  # our own errors travel by name
        cls = getattr(exc_mod, type_name.rsplit(".", 1)[-1], None)
        if isinstance(cls, type) and issubclass(cls, exc_mod.RunhouseError) and cls is not RemoteException:
            if issubclass(cls, ServerError):
                return cls(message, int(meta.get("status") or 500))
            return cls(message)
    if payload and meta.get("serialization") == "pickle":
        try:
            exc = pickle.loads(payload)
        except Exception:  # type not importable here (version skew): fall back below
            exc = None
        if isinstance(exc, BaseException):
            with contextlib.suppress(AttributeError):  # exceptions with __slots__
                exc.__rh_remote_traceback__ = tb  # type: ignore[attr-defined]
            if tb and hasattr(exc, "add_note"):
                exc.add_note("Remote traceback (most recent call last on the cluster):\n" + tb.rstrip())
            return exc
    return RemoteException(type_name, message, tb)


class ReplyDecoder:
    """Decode a frames reply incrementally into events; raise on an exception frame."""

    def __init__(self, shm: Path | None = None) -> None:
        self._frames = FrameDecoder()
        self._shm = shm

    def feed(self, data: bytes) -> list[Event]:
        return [self._event(h, p) for h, p in self._frames.feed(data)]

    def finish(self) -> None:
        self._frames.finish()

    def _event(self, meta: dict[str, Any], payload: bytes) -> Event:
        kind = meta.get("output_type")
        if kind == OutputType.STDOUT:
            return Event("stdout", bytes(payload).decode(errors="replace"))
        if kind == OutputType.EXCEPTION:
            raise rebuild_exception(meta, payload)
        ser = meta.get("serialization") or "json"
        if kind == OutputType.STREAM_ITEM:
            return Event("item", deserialize(payload, ser, self._shm))
        if kind == OutputType.RESULT:
            return Event("result", deserialize(payload, ser, self._shm) if payload else None)
        if kind == OutputType.SUCCESS:
            return Event("success")
        if kind == OutputType.CONFIG:
            return Event("config", deserialize(payload, ser) if payload else None)
        raise ServerError(f"daemon sent an unknown output type {kind!r}; upgrade runhouse", 502)


_ERRORS_BY_NAME: dict[str, type[exc_mod.RunhouseError]] = {
    cls.__name__: cls
    for cls in (exc_mod.AuthError, exc_mod.ObjectNotFound, exc_mod.BadRequest, exc_mod.ServerError)
}


def raise_for_error_body(status: int, body: bytes) -> None:
    """Raise the client-side error for a 4xx/5xx reply with our JSON error body."""
    try:
        data = json.loads(body)
        name, detail = str(data.get("error", "")), str(data.get("detail", ""))
    except (ValueError, AttributeError):
        name, detail = "", body[:500].decode(errors="replace")
    if name == "WorkerDied":
        raise WorkerDied(detail)
    cls = _ERRORS_BY_NAME.get(name)
    if cls is not None and issubclass(cls, ServerError):
        raise cls(detail, status)
    raise error_for_status(status, detail or f"HTTP {status}")
