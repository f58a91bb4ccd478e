"""Turning an exception raised in a worker into something the caller can rebuild."""

from __future__ import annotations

import os
import traceback
from types import TracebackType

import cloudpickle

from runhouse.protocol.messages import ErrorInfo


class CallError(Exception):
    """A problem with the request itself (unknown key or method): reported as a 4xx, not a user error."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_OUR_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip the worker's own frames at the top of a traceback: users care about theirs."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OUR_DIR):
        tb = tb.tb_next
    return tb


def _raised_by_the_request(exc: BaseException) -> bool:
    """Whether ``exc`` was raised before any user code ran: its traceback ends in the worker's own
    frames (arguments that do not fit the signature, an attribute the object does not have)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_OUR_DIR)


# HTTP status for JSON callers when the request itself did not fit the object (our own client
# still gets the exception, re-raised with its type)
_REQUEST_ERRORS = ((TypeError, 422), (AttributeError, 404))


def error_info(exc: BaseException, with_pickle: bool) -> ErrorInfo:
    """Type, message, traceback text and (for pickle callers) the pickled exception."""
    cls = type(exc)
    info: ErrorInfo = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, _user_frames(exc.__traceback__))),
        "pickled": None,
    }
    if isinstance(exc, CallError):
        info["status"] = exc.status
        info["traceback"] = ""
        return info
    for kind, status in _REQUEST_ERRORS:
        if isinstance(exc, kind) and _raised_by_the_request(exc):
            info["http_status"] = status
            break
    if with_pickle:
        try:
            info["pickled"] = cloudpickle.dumps(exc, protocol=5)
        except Exception:  # unpicklable exceptions still travel as type + message + traceback
            info["pickled"] = None
    return info
