"""The errors Den answers with, each bound to one HTTP status in :data:`STATUS_BY_ERROR`.

::

    RunhouseError
    └── DenError              500 unless a subclass says otherwise
        ├── InvalidInput      400  a bad name, URI, config or parameter
        ├── Unauthenticated   401  missing, unknown, expired or revoked token
        ├── Forbidden         403  a known caller without the access it needs
        ├── NotFound          404  unknown user, resource or token
        ├── Conflict          409  already exists, or lost a race too many times
        ├── TooLarge          413  a config or request body over the limit
        └── Busy              503  the database stayed locked; try again

Every message says what is wrong and what to do, and goes back to the caller as
``{"detail": message}``.
"""

from __future__ import annotations

from runhouse.exceptions import RunhouseError


class DenError(RunhouseError):
    """Root of the errors Den turns into HTTP replies."""


class InvalidInput(DenError):
    """The request names something malformed or carries a value Den cannot store."""


class Unauthenticated(DenError):
    """No token, or one Den does not accept (unknown, expired, revoked)."""


class Forbidden(DenError):
    """The caller is known but lacks the access the request needs."""


class NotFound(DenError):
    """No user, resource or token by that name or id."""


class Conflict(DenError):
    """The thing to create already exists, or concurrent writes kept colliding."""


class TooLarge(DenError):
    """A config or request body is over Den's size limit."""


class Busy(DenError):
    """The database could not be written in time (SQLite stayed locked)."""


STATUS_BY_ERROR: tuple[tuple[type[DenError], int], ...] = (
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (Busy, 503),
)


def status_for(exc: DenError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500
