"""This client's Den session: one :class:`DenClient` per (URL, token), and who the token belongs to."""

from __future__ import annotations

from runhouse.client.den import DenClient
from runhouse.settings import Settings

_clients: dict[tuple[str, str], DenClient] = {}
_users: dict[tuple[str, str], str] = {}


def den_client(settings: Settings) -> DenClient:
    """The Den client for the logged-in user (ConfigError with a hint when not logged in)."""
    if not settings.logged_in:
        return DenClient.from_settings(settings)  # raises the not-logged-in hint
    key = (str(settings.den_url), str(settings.token))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = DenClient(key[0], key[1])
    return client


def current_user(settings: Settings) -> str:
    """The logged-in user's name: from the login file, else asked of Den once per process."""
    if settings.username:
        return settings.username
    key = (str(settings.den_url), str(settings.token))
    if key not in _users:
        _users[key] = den_client(settings).me()
    return _users[key]
