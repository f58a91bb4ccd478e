"""A client for Den, the team registry (see ``docs/den-api.md``): resources, sharing, secrets, usage.

::

    den = DenClient("http://127.0.0.1:8420", token)
    den.put_resource("alice", "fn", config)
    den.share("alice", "fn", "bob", "read")

Errors come back as our own exceptions, with Den's message: 401/403 as :class:`AuthError`, 404 as
:class:`ObjectNotFound`, other 4xx as :class:`BadRequest`; an unreachable Den as
:class:`ConnectionError_` naming the URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from runhouse.exceptions import ConfigError, ConnectionError_, error_for_status
from runhouse.settings import Settings

ACCESS_LEVELS = ("read", "write", "denied")
VISIBILITIES = ("private", "unlisted", "public")


def split_uri(uri: str) -> tuple[str, str]:
    """``/owner/name`` -> ``(owner, name)``."""
    parts = uri.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        raise ConfigError(f"{uri!r} is not a Den name; Den names look like '/owner/name'")
    return parts[1], parts[2]


def _path(owner: str, name: str) -> str:
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"


def _detail(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:500] or reply.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail)


class DenClient:
    """Synchronous calls to one Den as one user (or as a daemon, with a daemon token)."""

    def __init__(self, url: str, token: str | None, timeout: float = 15.0) -> None:
        if not url:
            raise ConfigError("no Den URL: run `runhouse login --den-url URL` or set RH_DEN_URL")
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> DenClient:
        if not settings.logged_in:
            raise ConfigError(
                "not logged in to Den: run `runhouse login` (or set RH_TOKEN and RH_DEN_URL) to use '/owner/name' "
                "resources"
            )
        return cls(str(settings.den_url), settings.token)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            reply = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as e:
            raise ConnectionError_(f"cannot reach Den at {self.url}: {e}") from e
        if reply.status_code >= 400:
            raise error_for_status(reply.status_code, f"Den ({reply.status_code}): {_detail(reply)}")
        return reply.json() if reply.content else None

    # -- users and tokens ------------------------------------------------------------------------
    def me(self) -> str:
        return str(self.request("GET", "/v1/me")["username"])

    def create_token(self, name: str | None = None, expires_in_s: int | None = None) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/tokens", {"name": name, "expires_in_s": expires_in_s}))

    def tokens(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/tokens"))

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}")

    def cluster_token(self, cluster_uri: str) -> str:
        """A token for calling ``cluster_uri``'s daemon as this user (never the user token itself)."""
        return str(self.request("POST", "/v1/tokens/cluster", {"cluster": cluster_uri})["token"])

    def daemon_token(self, cluster_uri: str) -> str:
        """The credential a den_auth daemon uses to ask Den about its callers."""
        owner, name = split_uri(cluster_uri)
        return str(self.request("POST", f"/v1/clusters/{_path(owner, name)}/daemon-token")["token"])

    # -- resources ---------------------------------------------------------------------------------
    def put_resource(
        self, owner: str, name: str, config: dict[str, Any], visibility: str | None = None
    ) -> dict[str, Any]:
        body = {"config": config, "visibility": visibility}
        return dict(self.request("PUT", f"/v1/resources/{_path(owner, name)}", body))

    def get_resource(self, owner: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/resources/{_path(owner, name)}"))

    def exists(self, owner: str, name: str) -> bool:
        try:
            self.get_resource(owner, name)
        except KeyError:  # ObjectNotFound
            return False
        return True

    def history(self, owner: str, name: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/v1/resources/{_path(owner, name)}/history"))

    def delete_resource(self, owner: str, name: str) -> None:
        self.request("DELETE", f"/v1/resources/{_path(owner, name)}")

    def list_resources(
        self, owner: str | None = None, resource_type: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"owner": owner, "resource_type": resource_type}.items() if v}
        return list(self.request("GET", "/v1/resources", params=params))

    def set_visibility(self, owner: str, name: str, visibility: str) -> None:
        if visibility not in VISIBILITIES:
            raise ConfigError(f"visibility must be one of {', '.join(VISIBILITIES)}, not {visibility!r}")
        self.request("PUT", f"/v1/resources/{_path(owner, name)}/visibility", {"visibility": visibility})

    def share(self, owner: str, name: str, username: str, access_level: str) -> None:
        if access_level not in ACCESS_LEVELS:
            raise ConfigError(f"access_level must be one of {', '.join(ACCESS_LEVELS)}, not {access_level!r}")
        path = f"/v1/resources/{_path(owner, name)}/access/{quote(username, safe='')}"
        self.request("PUT", path, {"access_level": access_level})

    def revoke(self, owner: str, name: str, username: str) -> None:
        self.request("DELETE", f"/v1/resources/{_path(owner, name)}/access/{quote(username, safe='')}")

    def access(self, owner: str, name: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/v1/resources/{_path(owner, name)}/access"))

    # -- secrets -----------------------------------------------------------------------------------
    def put_secret(
        self, owner: str, name: str, values: dict[str, str], provider: str | None = None
    ) -> dict[str, Any]:
        body = {"values": values, "provider": provider}
        return dict(self.request("PUT", f"/v1/secrets/{_path(owner, name)}", body))

    def get_secret(self, owner: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/secrets/{_path(owner, name)}"))

    # -- usage and status ----------------------------------------------------------------------------
    def events(self, events: list[dict[str, Any]]) -> None:
        self.request("POST", "/v1/events", {"events": events})

    def usage(self, cluster: str | None = None, since: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"cluster": cluster, "since": since}.items() if v}
        return list(self.request("GET", "/v1/usage", params=params))

    def heartbeat(self, cluster_uri: str, status: dict[str, Any]) -> None:
        owner, name = split_uri(cluster_uri)
        self.request("POST", f"/v1/clusters/{_path(owner, name)}/heartbeat", {"status": status})

    def cluster_status(self, cluster_uri: str) -> dict[str, Any]:
        owner, name = split_uri(cluster_uri)
        return dict(self.request("GET", f"/v1/clusters/{_path(owner, name)}/status"))
