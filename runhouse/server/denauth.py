"""A daemon's Den identity: checking callers' tokens with Den, and reporting status and usage.

A cluster started with ``den_auth=True`` gets a ``den.json`` in its daemon folder (mode 0600):
Den's URL, the cluster's Den name and a *daemon token* Den issued for this cluster alone. The
owner's own Den token never reaches the cluster. Callers send either the cluster token (the owner's
admin path) or a cluster-scoped token Den gave them for this cluster; the daemon asks Den who that
is and what they may do (``POST /v1/auth/check``), and remembers the answer for ``ttl_s``.

Access needed: reading routes and calls need ``read`` on the cluster, or ``read`` on the called
object's own Den resource (``/<cluster owner>/<key>``); everything that changes the cluster
(deploys, puts, deletes, shell commands, envs, folders) needs ``write`` on the cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:  # httpx is imported when a daemon first talks to Den (it costs ~0.1 s at start)
    import httpx

log = logging.getLogger(__name__)

LEVELS = {"none": 0, "read": 1, "write": 2}
# Daemon routes that only read; every other fixed route (the app's table, given to DenAuth as
# ``fixed_paths``) changes the cluster and needs write.
READ_ROUTES = frozenset(
    {
        ("GET", "/status"),
        ("GET", "/keys"),
        ("GET", "/object"),
        ("GET", "/resource"),
        ("GET", "/envs"),
        ("POST", "/logs"),
        ("POST", "/folder/method/ls"),
        ("POST", "/folder/method/get"),
        ("POST", "/folder/method/exists"),
    }
)
# ``GET /{key}/openapi.json`` and ``/{key}/docs`` have the shape of a call, so they need read like
# one (on the cluster, or on the object's own resource): a caller who may call may read the spec.
IDENTITY_FILE = "den.json"


@dataclass(frozen=True)
class DenIdentity:
    url: str
    cluster: str  # "/owner/name"
    token: str  # the daemon token (scope daemon:/owner/name)

    @property
    def owner(self) -> str:
        return self.cluster.split("/")[1]

    @classmethod
    def load(cls, folder: Path) -> DenIdentity | None:
        path = folder / IDENTITY_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(str(data["den_url"]).rstrip("/"), str(data["cluster"]), str(data["token"]))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from and what they may do on this daemon: ``write`` (change the cluster,
    send pickles) or ``read`` (call methods with data-only arguments, read status and logs);
    ``none`` for open routes. ``user`` is a Den username, or "" for the owner without Den."""

    user: str
    access: str


class Denied(Exception):
    """The caller may not do this; ``status`` is 401 (unknown token) or 403 (not allowed)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class DenAuth:
    """Checks callers with Den (cached), counts their calls, and heartbeats to Den."""

    def __init__(self, identity: DenIdentity, ttl_s: float = 30.0, heartbeat_s: float = 60.0) -> None:
        self.identity = identity
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self._cache: dict[tuple[bytes, str], tuple[float, str, str]] = {}
        self._inflight: dict[tuple[bytes, str], asyncio.Future[tuple[str, str]]] = {}
        self._http: httpx.AsyncClient | None = None
        self.cache_hits = 0
        self.den_lookups = 0
        self.usage: Counter[tuple[str, str, str]] = Counter()  # (user, kind, key) -> count
        # the daemon's own routes (set by create_app): any other /{key}/{method} is a call
        self.fixed_paths: frozenset[str] = frozenset()

    def needed_level(self, method: str, path: str) -> str:
        """``read`` or ``write``: what a request needs on the cluster. Calls (``/{key}/{method}``) read."""
        if (method, path) in READ_ROUTES or self.is_call(path):
            return "read"
        return "write"

    def is_call(self, path: str) -> bool:
        parts = path.split("/")
        return len(parts) == 3 and bool(parts[1]) and bool(parts[2]) and path not in self.fixed_paths

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                base_url=self.identity.url,
                headers={"Authorization": f"Bearer {self.identity.token}"},
                timeout=10.0,
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def level(self, token: bytes, resource: str) -> tuple[str, str]:
        """(username, access level) of the token's user on ``resource`` (a Den URI)."""
        key = (token, resource)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            self.cache_hits += 1
            return hit[1], hit[2]
        pending = self._inflight.get(key)
        if pending is not None:  # one lookup per token and resource at a time
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._ask(token, resource)
            self._cache[key] = (time.monotonic() + self.ttl_s, *answer)
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            future.set_result(answer)
            return answer
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._inflight[key]

    async def _ask(self, token: bytes, resource: str) -> tuple[str, str]:
        self.den_lookups += 1
        body = {"token": token.decode("latin-1"), "resource": resource}
        import httpx

        try:
            reply = await self._client().post("/v1/auth/check", json=body)
        except httpx.HTTPError as e:
            raise Denied(
                503, f"cannot reach Den at {self.identity.url} to check the caller's token: {e}"
            ) from e
        if reply.status_code in (401, 403):
            detail = _detail(reply)
            raise Denied(reply.status_code, f"Den refused the caller's token: {detail}")
        if reply.status_code != 200:
            raise Denied(503, f"Den answered {reply.status_code} checking a token: {_detail(reply)}")
        data = reply.json()
        return str(data["username"]), str(data["access_level"])

    def _decide(
        self, user: str, cluster_level: str, own_level: str | None, method: str, path: str
    ) -> Caller | None:
        """The one access decision: the :class:`Caller` a request is made as, given the token's
        level on the cluster and (for calls) on the called object's own resource; None when the
        object's level is needed but not known yet. Raises :class:`Denied`.

        Write on the cluster makes a ``write`` caller; read on the cluster, or read or write on
        the object's resource alone, a ``read`` caller (a share of one function never lets its
        holder change the cluster or send it code)."""
        need = self.needed_level(method, path)
        level = LEVELS.get(cluster_level, 0)
        if level >= LEVELS[need]:
            return Caller(user, "write" if level >= LEVELS["write"] else "read")
        cluster = self.identity.cluster
        if not self.is_call(path):
            raise Denied(
                403,
                f"user {user!r} has {cluster_level!r} access to cluster {cluster}; this request needs {need!r} "
                f"(ask the owner: cluster.share({user!r}, access_level={need!r}))",
            )
        if own_level is None:
            return None
        if LEVELS.get(own_level, 0) >= LEVELS["read"]:
            return Caller(user, "read")
        raise Denied(
            403,
            f"user {user!r} has no access to {self._object_resource(path)} or to cluster {cluster}; ask its "
            f"owner to share it (resource.share({user!r}, access_level='read'))",
        )

    def _object_resource(self, path: str) -> str:
        return f"/{self.identity.owner}/{unquote(path.split('/')[1])}"

    def cached_caller(self, token: bytes, method: str, path: str) -> Caller | None:
        """:meth:`authorize` answered from the cache alone: the caller if fresh cached answers allow
        the request, else None (the request then takes the path that asks Den, and explains a refusal)."""
        raw = token[7:] if token[:7].lower() == b"bearer " else token
        now = time.monotonic()
        hit = self._cache.get((raw, self.identity.cluster))
        if hit is None or hit[0] <= now:
            return None
        try:
            caller = self._decide(hit[1], hit[2], None, method, path)
            if caller is None:
                own = self._cache.get((raw, self._object_resource(path)))
                if own is None or own[0] <= now:
                    return None
                caller = self._decide(hit[1], hit[2], own[2], method, path)
        except Denied:
            return None
        if caller is not None:
            self.cache_hits += 1
        return caller

    async def authorize(self, token: bytes, method: str, path: str) -> Caller:
        """Who is calling, if they may make this request; raises :class:`Denied` otherwise."""
        raw = token[7:] if token[:7].lower() == b"bearer " else token
        user, level = await self.level(raw, self.identity.cluster)
        caller = self._decide(user, level, None, method, path)
        if caller is None:  # a call the cluster level does not allow: the object's own resource may
            _, own_level = await self.level(raw, self._object_resource(path))
            caller = self._decide(user, level, own_level, method, path)
        assert caller is not None
        return caller

    def count(self, user: str, method: str, path: str) -> None:
        if self.is_call(path):
            self.usage[(user, "call", unquote(path.split("/")[1]))] += 1
        elif path == "/resource" and method == "POST":
            self.usage[(user, "deploy", "")] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "cluster": self.identity.cluster,
            "den_url": self.identity.url,
            "cache_hits": self.cache_hits,
            "den_lookups": self.den_lookups,
            "ttl_s": self.ttl_s,
        }

    async def report(self, status: dict[str, Any]) -> None:
        """Send counted usage and a heartbeat; counts that could not be sent are kept for next time."""
        taken, self.usage = self.usage, Counter()
        events = [
            {
                "kind": kind,
                "cluster": self.identity.cluster,
                "resource": key or None,
                "count": n,
                "username": user,
            }
            for (user, kind, key), n in taken.items()
        ]
        client = self._client()
        owner, name = self.identity.cluster.split("/")[1:]
        import httpx

        try:
            for start in range(0, len(events), 1000):
                reply = await client.post("/v1/events", json={"events": events[start : start + 1000]})
                reply.raise_for_status()
            reply = await client.post(f"/v1/clusters/{owner}/{name}/heartbeat", json={"status": status})
            reply.raise_for_status()
        except httpx.HTTPError as e:
            self.usage.update(taken)
            log.warning("could not report to Den at %s: %s", self.identity.url, e)


def _detail(reply: httpx.Response) -> str:
    try:
        data = reply.json()
    except ValueError:
        return reply.text[:300]
    return str(data.get("detail", data)) if isinstance(data, dict) else str(data)
