"""The daemon-worker protocol: one typed record per message.

Every message is a :class:`typing.NamedTuple` whose first field is the request's call id (``cid``)
and whose last field is its ``kind``, a string fixed by the class (``Call(...).kind == "call"``).
Code on either side builds and reads records by field (``msg.options["timeout"]``,
``reply.info["message"]``), so mypy checks the protocol; dispatch is on the record's type.

On the IPC channel (:mod:`runhouse.protocol.ipc`) a record travels as the plain tuple of its fields
(:func:`encode`, i.e. ``tuple(msg)``) and is rebuilt by the receiver from its last element
(:func:`decode_request`, :func:`decode_reply`). Pickling the record itself would name its class in
every header, which costs a few microseconds per message on each side; the plain tuple pickles
exactly as the positional tuples before it did. A message of a kind this side does not know, or
with the wrong number of fields, is refused with :class:`ProtocolError`.

The worker core (:mod:`runhouse.server.worker.runtime`) takes and sends records, whatever
carries them: the IPC channel on one node, a Ray actor's calls across nodes.

Requests (daemon to worker; a payload may follow in the message body):

* :class:`Call` + args payload; :class:`Deploy` + pickled object or init args
* :class:`Put` + payload; :class:`Get`; :class:`Keys`; :class:`Delete`; :class:`Rename`; :class:`Status`
* :class:`Cancel`: call ``cid``'s caller went away; no reply

Replies (worker to daemon, carrying the request's ``cid``): :class:`Out` (printed output),
:class:`Item` + payload (one generator item), :class:`Result` + payload, :class:`Error`,
:class:`End` (a generator finished), :class:`Ok` (an object operation's value); and once, when the
worker is up, :class:`Hello` (``cid`` 0).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, TypedDict

# -- payload shapes ------------------------------------------------------------------------


class CallOptionsDict(TypedDict):
    """A call's options, as checked by the daemon (``routes/calls.call_options``)."""

    stream_logs: bool  # send printed output and log records back while the call runs
    run_name: str | None
    remote: bool  # keep the result on the worker under run_name and return a reference
    shm: bool  # large buffers may travel through this host's shared memory
    timeout: float | None  # seconds; past them the worker cancels the call (TimeoutError)


class _ErrorInfoFields(TypedDict):
    type: str  # the exception's module.qualname
    message: str
    traceback: str  # the user's frames only; "" for errors about the request itself
    pickled: bytes | None  # the exception, cloudpickled, for pickle callers


class ErrorInfo(_ErrorInfoFields, total=False):
    """An exception raised while serving a request, as the caller can rebuild it."""

    status: int  # the request itself was wrong (unknown key or method): this HTTP status, no traceback
    http_status: int  # the HTTP status for JSON callers of a call that failed (504 for a timeout)
    worker_died: bool  # the worker process ended while the request was in flight


# -- requests: daemon to worker ------------------------------------------------------------


class Call(NamedTuple):
    """Call ``method`` of the object ``key`` (``"call"`` calls a function) with the body's args."""

    cid: int
    key: str
    method: str
    serialization: str
    options: CallOptionsDict
    kind: Literal["call"] = "call"


class Deploy(NamedTuple):
    """Hold a new object under ``key``: imported as ``spec`` says, unpickled from the body, or an
    instance built from the body's init args (``spec["kind"] == "instance"``)."""

    cid: int
    key: str
    spec: dict[str, Any]
    serialization: str
    kind: Literal["deploy"] = "deploy"


class Put(NamedTuple):
    """Hold the value in the body under ``key``."""

    cid: int
    key: str
    serialization: str
    kind: Literal["put"] = "put"


class Get(NamedTuple):
    """Send the object ``key`` back as a :class:`Result`."""

    cid: int
    key: str
    serialization: str
    kind: Literal["get"] = "get"


class Keys(NamedTuple):
    cid: int
    kind: Literal["keys"] = "keys"


class Delete(NamedTuple):
    """Drop ``keys``; :class:`Ok` with the ones that were there."""

    cid: int
    keys: list[str]
    kind: Literal["delete"] = "delete"


class Rename(NamedTuple):
    cid: int
    old: str
    new: str
    kind: Literal["rename"] = "rename"


class Status(NamedTuple):
    """:class:`Ok` with the worker's pid, objects, running calls and threads."""

    cid: int
    kind: Literal["status"] = "status"


class Cancel(NamedTuple):
    """The caller of call ``cid`` went away: stop it. No reply."""

    cid: int
    kind: Literal["cancel"] = "cancel"


# -- replies: worker to daemon -------------------------------------------------------------


class Out(NamedTuple):
    """Text the call printed or logged."""

    cid: int
    text: str
    kind: Literal["out"] = "out"


class Item(NamedTuple):
    """One item a generator yielded; the body holds it, serialized."""

    cid: int
    serialization: str
    kind: Literal["item"] = "item"


class Result(NamedTuple):
    """The call's result (or the object a :class:`Get` asked for); the body holds it, serialized.
    ``extra`` goes into the reply's frame header (``{"stored_key": ...}`` for a remote call)."""

    cid: int
    serialization: str
    extra: dict[str, Any] | None
    kind: Literal["result"] = "result"


class Error(NamedTuple):
    cid: int
    info: ErrorInfo
    kind: Literal["error"] = "error"


class End(NamedTuple):
    """A generator is exhausted."""

    cid: int
    kind: Literal["end"] = "end"


class Ok(NamedTuple):
    """An object operation's value (JSON-able)."""

    cid: int
    value: Any
    kind: Literal["ok"] = "ok"


class Hello(NamedTuple):
    """The worker is up and serving (sent once, ``cid`` 0)."""

    cid: int
    pid: int
    kind: Literal["hello"] = "hello"


WorkerRequest = Call | Deploy | Put | Get | Keys | Delete | Rename | Status | Cancel
WorkerReply = Out | Item | Result | Error | End | Ok | Hello
FinalReply = Result | Error | End | Ok
# the replies that end a request (for isinstance); Out and Item may be followed by more
FINAL = (Result, Error, End, Ok)

REQUESTS: tuple[type[WorkerRequest], ...] = (Call, Deploy, Put, Get, Keys, Delete, Rename, Status, Cancel)
REPLIES: tuple[type[WorkerReply], ...] = (Out, Item, Result, Error, End, Ok, Hello)


class ProtocolError(ValueError):
    """A daemon-worker message this side cannot read: an unknown kind or the wrong fields."""


def _table(classes: tuple[type[Any], ...]) -> dict[str, tuple[type[Any], int]]:
    return {cls._field_defaults["kind"]: (cls, len(cls._fields)) for cls in classes}


_REQUEST_KINDS = _table(REQUESTS)
_REPLY_KINDS = _table(REPLIES)
_new = tuple.__new__


def encode(msg: WorkerRequest | WorkerReply) -> tuple[Any, ...]:
    """The record as the plain tuple of its fields, for the IPC channel."""
    return tuple(msg)


def decode_request(header: Any) -> WorkerRequest:
    """The request record a plain tuple from the channel stands for (see :func:`encode`)."""
    try:
        cls, arity = _REQUEST_KINDS[header[-1]]
        if len(header) == arity:
            return _new(cls, header)
    except (KeyError, TypeError, IndexError):
        pass
    raise unknown_message(header, "request", _REQUEST_KINDS)


def decode_reply(header: Any) -> WorkerReply:
    """The reply record a plain tuple from the channel stands for (see :func:`encode`)."""
    try:
        cls, arity = _REPLY_KINDS[header[-1]]
        if len(header) == arity:
            return _new(cls, header)
    except (KeyError, TypeError, IndexError):
        pass
    raise unknown_message(header, "reply", _REPLY_KINDS)


def cid_of(header: Any) -> int | None:
    """The call id of a message (record or plain tuple), to answer one that cannot be read: first,
    as in a record, or second, after the kind (the positional tuples before records)."""
    first = _first(header)
    if type(first) is int:
        return first
    if isinstance(first, str):
        try:
            second = header[1]
        except (TypeError, IndexError, KeyError):
            return None
        return second if type(second) is int else None
    return None


def unknown_message(
    header: Any, side: str, table: dict[str, tuple[type[Any], int]] | None = None
) -> ProtocolError:
    """The error for a message that is not a known ``side`` ("request" or "reply") record."""
    if table is None:
        table = _REQUEST_KINDS if side == "request" else _REPLY_KINDS
    kinds = ", ".join(repr(k) for k in table)
    shown = repr(header)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    kind = _last(header)
    if isinstance(header, REQUESTS + REPLIES):
        what = "request" if isinstance(header, REQUESTS) else "reply"
        why = f"{type(header).__name__} is a {what}, not a {side}"
    elif isinstance(kind, str) and kind in table:
        cls, arity = table[kind]
        fields = ", ".join(cls._fields)
        why = f"a {kind!r} {side} has {arity} fields ({fields}), this one has {len(header)}"
    elif isinstance(_first(header), str) and _first(header) in table:
        why = (
            "it is a positional tuple with the kind first; messages are records of runhouse.protocol.messages"
        )
    else:
        why = f"a {side} is a record ending in its kind, one of {kinds}"
    return ProtocolError(
        f"unknown daemon-worker {side} {shown}: {why} (the daemon and its workers must run the same "
        "runhouse version)"
    )


def _first(header: Any) -> Any:
    try:
        return header[0]
    except (TypeError, IndexError, KeyError):
        return None


def _last(header: Any) -> Any:
    try:
        return header[-1]
    except (TypeError, IndexError, KeyError):
        return None
