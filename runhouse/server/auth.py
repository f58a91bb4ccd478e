"""Request guards in front of every route: Host/Origin checks, body size, bearer token, access level.

Only ``GET /check`` is open. Everything else needs ``Authorization: Bearer <cluster token>``;
the token is compared in constant time. With ``den_auth`` a caller may instead present a token Den
issued for this cluster; :mod:`runhouse.server.denauth` asks Den what that caller may do. ``Host``
must name this daemon (a DNS-rebinding page in a browser sends its own host name), and a browser
``Origin`` must too.

Every admitted request carries a :class:`Caller`: who it is and whether it may change the cluster
(``write``: the owner's cluster token, or write on the cluster in Den) or only use it (``read``).
What each level may do is written down in ``docs/security.md``; the call route enforces the
per-option part of it (:func:`runhouse.server.routes.calls.submit_call`).

Both ways into the daemon, the fast path (:mod:`runhouse.server.fastpath`, from the parser's
callbacks) and the ASGI path (:meth:`GuardMiddleware.__call__`), decide with the one function
:meth:`GuardMiddleware.admit`, so the two cannot drift apart.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from runhouse.server.denauth import Caller, DenAuth, Denied

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

log = logging.getLogger("runhouse.daemon")

OPEN_PATHS = frozenset({"/check"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
ANONYMOUS = Caller("", "none")  # who calls an open route


@dataclass(frozen=True, slots=True)
class Head:
    """The request headers the guard looks at, found in one pass over them."""

    auth: bytes | None
    host: bytes | None
    origin: bytes | None
    length: bytes | None
    streamed: bool  # Transfer-Encoding or Expect: the body's size is not known up front


def scan(headers: list[tuple[bytes, bytes]]) -> Head:
    auth = host = origin = length = None
    streamed = False
    for name, value in headers:
        if name == b"authorization":
            auth = value
        elif name == b"host":
            host = value
        elif name == b"content-length":
            length = value
        elif name == b"origin":
            origin = value
        elif name in (b"transfer-encoding", b"expect"):
            streamed = True
    return Head(auth, host, origin, length, streamed)


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Refusal(Exception):
    """A request the guard answers itself, with ``status`` and a JSON error body."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail

    def body(self) -> bytes:
        return json.dumps({"error": self.error, "detail": self.detail, "status": self.status}).encode()


async def _deny(send: Any, refusal: Refusal) -> None:
    body = refusal.body()
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        token: str,
        allowed_hosts: set[str] | None,
        max_body: int,
        token_hint: str,
        den: DenAuth | None = None,
    ) -> None:
        self.app = app
        self._den = den  # set: callers may also present Den tokens (den_auth)
        self._token = f"Bearer {token}".encode()
        # None: any Host (the daemon was bound to all addresses on purpose); the token still applies
        self._allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts} | LOOPBACK_NAMES
        self.daemon_state: Any = None
        self._hosts_seen: set[bytes] = set()
        self._max_body = max_body
        self._hint = token_hint
        # the owner (the cluster token): may do everything
        self.owner = Caller(den.identity.owner if den is not None else "", "write")

    def admit(self, head: Head, method: str, path: str, http11: bool) -> Caller | None:
        """Who is making this request, if it may be made: raises :class:`Refusal` when it may not,
        returns None when a Den token's access is not cached yet (only
        :meth:`admit_async` may ask Den). Limits and header checks come before the token."""
        host = head.host
        allowed = self._allowed
        if host is None:
            if http11:
                raise Refusal(400, "BadRequest", "an HTTP/1.1 request needs a Host header")
        elif allowed is not None and host not in self._hosts_seen:
            if _host_name(host.decode("latin-1")) not in allowed:
                raise Refusal(421, "BadRequest", "Host header does not name this daemon")
            if len(self._hosts_seen) < 64:  # remember accepted values: the check runs on every call
                self._hosts_seen.add(host)
        if head.origin is not None and allowed is not None:
            origin_host = head.origin.decode("latin-1").split("://", 1)[-1]
            if _host_name(origin_host) not in allowed:
                raise Refusal(403, "AuthError", "cross-origin requests are not accepted")
        if head.length is not None:
            try:
                length = int(head.length)
            except ValueError:
                raise Refusal(400, "BadRequest", "Content-Length is not a number") from None
            if length > self._max_body:
                raise Refusal(
                    413,
                    "BadRequest",
                    f"body of {length} bytes is over the daemon's limit of {self._max_body}; "
                    "raise max_body_mb in the settings or send less",
                )
        if path in OPEN_PATHS:
            return ANONYMOUS
        auth = head.auth
        if auth is None:
            raise Refusal(
                401, "AuthError", f"missing token: send 'Authorization: Bearer <token>' ({self._hint})"
            )
        if hmac.compare_digest(auth, self._token):
            return self.owner
        den = self._den
        if den is None:
            raise Refusal(403, "AuthError", f"wrong token for this cluster ({self._hint})")
        return den.cached_caller(auth, method, path)

    async def admit_async(self, head: Head, method: str, path: str, http11: bool) -> Caller:
        """:meth:`admit`, asking Den where its answer is not cached."""
        caller = self.admit(head, method, path, http11)
        if caller is not None:
            return caller
        assert self._den is not None and head.auth is not None  # admit() only asks for Den tokens
        try:
            return await self._den.authorize(head.auth, method, path)
        except Denied as e:
            raise Refusal(e.status, "AuthError", e.detail) from None

    def fast_caller(
        self, headers: list[tuple[bytes, bytes]], limit: int, path: str, http11: bool
    ) -> Caller | None:
        """Who is calling ``POST path`` when the daemon's fast path may serve it: every check here
        passes with nothing to answer or look up, and the body has a Content-Length of at most
        ``limit``. None sends the request the long way, through :meth:`__call__`."""
        head = scan(headers)
        if head.streamed or head.length is None or head.auth is None:
            return None
        if self._allowed is not None and head.host not in self._hosts_seen:
            return None  # the first request with this Host is checked (and explained) the long way
        try:
            caller = self.admit(head, "POST", path, http11)
        except Refusal:
            return None
        if caller is None or int(head.length) > limit:
            return None
        if self._den is not None:
            self._den.count(caller.user, "POST", path)
        return caller

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        try:
            caller = await self.admit_async(
                scan(scope["headers"]), method, path, scope.get("http_version") == "1.1"
            )
        except Refusal as refusal:
            log.info("refused %s %s: %s %s", method, path, refusal.status, refusal.detail)
            await _deny(send, refusal)
            return
        scope["rh.caller"] = caller
        if self._den is not None and caller is not ANONYMOUS:
            self._den.count(caller.user, method, path)
        await self.app(scope, receive, send)
