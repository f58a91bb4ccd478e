"""The errors runhouse raises, all under one root so callers can catch them together.

::

    RunhouseError
    ├── ConfigError            bad settings or arguments given to runhouse itself
    ├── ConnectionError_       the daemon cannot be reached or refused the handshake
    │   └── SSHError           a cluster host could not be reached, logged into or set up over SSH
    ├── ServerError            the daemon answered with an error about the request (4xx/5xx)
    │   ├── AuthError          missing or wrong token (401/403)
    │   ├── ObjectNotFound     no object with that key on the cluster (404)
    │   └── BadRequest         malformed body, unknown serialization, unknown method (400)
    ├── WorkerDied             the worker process holding the object exited during a call
    ├── EnvSetupError          an env's packages, venv, conda env or setup commands could not be made
    └── RemoteException        user code raised and its exception type cannot be rebuilt here

User exceptions raised remotely are re-raised with their own type when it can be unpickled; the
remote traceback text is attached as ``__rh_remote_traceback__`` and shown in the message notes.
"""

from __future__ import annotations


class RunhouseError(Exception):
    """Root of every error runhouse raises itself."""


class ConfigError(RunhouseError, ValueError):
    """Invalid settings or arguments (a bad port, an unknown call option, ...)."""


class ConnectionError_(RunhouseError, ConnectionError):
    """The daemon could not be reached, or its protocol version does not match ours."""


class SSHError(ConnectionError_):
    """Reaching, logging into or setting up a host over SSH failed; the message names the host
    and the step (connect, find python, venv, install, start daemon, ...) and the remote output."""


class ServerError(RunhouseError):
    """The daemon rejected a request. ``status`` is the HTTP status it answered with; each class
    has a default, and a status given when raising wins (``BadRequest("...", 409)``)."""

    default_status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = self.default_status if status is None else status


class AuthError(ServerError):
    """The request carried no token, or a token the daemon does not accept (401), or the caller
    may not do this (403)."""

    default_status = 401


class ObjectNotFound(ServerError, KeyError):
    """No object with the requested key lives on the cluster."""

    default_status = 404

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BadRequest(ServerError):
    """The request was malformed: bad JSON, unknown serialization, unknown method, ..."""

    default_status = 400


class WorkerDied(RunhouseError):
    """The worker process running a call exited before answering (os._exit, segfault, OOM)."""


class EnvSetupError(RunhouseError):
    """Installing an env's requirements or running its setup commands failed on the cluster.

    The message names what failed and ends with the installer's own output."""


class RemoteException(RunhouseError):
    """A remote exception whose original type could not be rebuilt on this side.

    Carries ``type_name``, ``message`` and ``remote_traceback`` as attributes.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback
        return text


# Status codes for our errors that carry none of their own, looked up by class.
STATUS_BY_ERROR: tuple[tuple[type[RunhouseError], int], ...] = (
    (ConfigError, 400),
    (WorkerDied, 503),
    (EnvSetupError, 422),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status the daemon answers with for one of our own errors: a
    :class:`ServerError`'s own ``status``, else the class's entry in :data:`STATUS_BY_ERROR`."""
    if isinstance(exc, ServerError):
        return exc.status
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_for_status(status: int, message: str) -> ServerError:
    """The client-side error to raise for an error status the daemon answered with."""
    if status in (401, 403):
        return AuthError(message, status)
    if status == 404:
        return ObjectNotFound(message, status)
    if 400 <= status < 500:
        return BadRequest(message, status)
    return ServerError(message, status)
