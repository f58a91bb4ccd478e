"""Turning an exception raised in a worker into something the caller can rebuild."""

from __future__ import annotations

import os
import traceback
from types import TracebackType
from typing import Any

import cloudpickle


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


def error_info(exc: BaseException, with_pickle: bool) -> dict[str, Any]:
    """Type, message, traceback text and (for pickle callers) the pickled exception."""
    cls = type(exc)
    info: dict[str, Any] = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, _user_frames(exc.__traceback__))),
        "pickled": None,
    }
    if isinstance(exc, CallError):
        info["status"] = exc.status
        info["traceback"] = ""
        return info
    if with_pickle:
        try:
            info["pickled"] = cloudpickle.dumps(exc, protocol=5)
        except Exception:  # unpicklable exceptions still travel as type + message + traceback
            info["pickled"] = None
    return info
