"""Request guards in front of every route: bearer token, Host/Origin checks, body size.

Only ``GET /check`` is open. Everything else needs ``Authorization: Bearer <cluster token>``;
the token is compared in constant time. With ``den_auth`` a caller may instead present a token Den
issued for this cluster; :mod:`runhouse.server.denauth` asks Den what that caller may do. ``Host`` must name this daemon (a DNS-rebinding page in a
browser sends its own host name), and a browser ``Origin`` must too.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from runhouse.server.denauth import DenAuth, Denied

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

OPEN_PATHS = frozenset({"/check"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def _deny(send: Any, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail, "status": status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
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

    def fast_caller(self, headers: list[tuple[bytes, bytes]], limit: int, path: str) -> str | None:
        """Who is calling ``POST path``, when the request passes every check here with nothing to
        answer: a known Host, no Origin, a Content-Length of at most ``limit``, and either the
        cluster token (the owner: ``""`` without Den) or a Den token whose access this daemon
        already knows from its cache. None otherwise.

        The daemon's fast path serves such requests without the ASGI stack; anything else (a Den
        token to look up, a refusal to explain, a streamed body) goes the long way through
        :meth:`__call__`."""
        auth = host = length = None
        for name, value in headers:
            if name == b"authorization":
                auth = value
            elif name == b"host":
                host = value
            elif name == b"content-length":
                length = value
            elif name in (b"origin", b"transfer-encoding", b"expect"):
                return None
        if auth is None or length is None:
            return None
        if self._allowed is not None and (host is None or host not in self._hosts_seen):
            return None
        try:
            if not 0 <= int(length) <= min(limit, self._max_body):
                return None
        except ValueError:
            return None
        den = self._den
        if hmac.compare_digest(auth, self._token):
            return den.identity.owner if den is not None else ""
        return den.cached_caller(auth, "POST", path) if den is not None else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = host = origin = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
            elif name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-length":
                length = value
        allowed = self._allowed
        if allowed is not None and host is not None and host not in self._hosts_seen:
            if _host_name(host.decode("latin-1")) not in allowed:
                await _deny(send, 421, "BadRequest", "Host header does not name this daemon")
                return
            if len(self._hosts_seen) < 64:  # remember accepted values: the check runs on every call
                self._hosts_seen.add(host)
        if origin is not None and allowed is not None:
            origin_host = origin.decode("latin-1").split("://", 1)[-1]
            if _host_name(origin_host) not in allowed:
                await _deny(send, 403, "AuthError", "cross-origin requests are not accepted")
                return
        if scope["path"] not in OPEN_PATHS:
            if auth is None:
                await _deny(
                    send,
                    401,
                    "AuthError",
                    f"missing token: send 'Authorization: Bearer <token>' ({self._hint})",
                )
                return
            if not hmac.compare_digest(auth, self._token):
                den = self._den
                if den is None:
                    await _deny(send, 403, "AuthError", f"wrong token for this cluster ({self._hint})")
                    return
                try:
                    user = await den.authorize(auth, scope["method"], scope["path"])
                except Denied as e:
                    await _deny(send, e.status, "AuthError", e.detail)
                    return
                den.count(user, scope["method"], scope["path"])
            elif self._den is not None:
                self._den.count(self._den.identity.owner, scope["method"], scope["path"])
        if length is not None and int(length) > self._max_body:
            await _deny(
                send,
                413,
                "BadRequest",
                f"body of {int(length)} bytes is over the daemon's limit of {self._max_body}; "
                "raise max_body_mb in the settings or send less",
            )
            return
        await self.app(scope, receive, send)
