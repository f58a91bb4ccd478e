"""``rh.login`` / ``rh.logout``: connect this client to a Den, the team registry.

::

    rh.login(token="...", den_url="http://den.internal:8420")   # checks the token, remembers it
    rh.function(add).to(cluster, name="add").save()             # now saved to Den as /<you>/add

The token and URL go to ``$RH_HOME/config.yaml`` (mode 0600); ``RH_TOKEN`` and ``RH_DEN_URL`` in
the environment override them.
"""

from __future__ import annotations

from typing import Any

from runhouse.client.den import DenClient
from runhouse.exceptions import ConfigError
from runhouse.settings import DEFAULT_DEN_URL, load_settings, update_config_file


def login(token: str | None = None, den_url: str | None = None) -> str:
    """Check ``token`` with Den and save it (with the URL and user name) as this client's login.

    Returns the user name. ``den_url`` defaults to the configured one, else a Den on this machine."""
    settings = load_settings()
    token = token or settings.token
    if not token:
        raise ConfigError("rh.login needs token=...; `runhouse den user add NAME` prints one where Den runs")
    url = (den_url or settings.den_url or DEFAULT_DEN_URL).rstrip("/")
    client = DenClient(url, token)
    try:
        username = client.me()
    finally:
        client.close()
    update_config_file(settings.home, {"token": token, "den_url": url, "username": username})
    return username


def logout() -> bool:
    """Forget the saved Den token (configs already loaded stay usable); True if one was saved."""
    settings = load_settings()
    path = settings.home / "config.yaml"
    had = path.exists() and "token:" in path.read_text()
    update_config_file(settings.home, {}, remove=("token", "username"))
    return had


def whoami() -> dict[str, Any]:
    """Who this client is logged in as, and where (``{}`` when logged out)."""
    settings = load_settings()
    if not settings.logged_in:
        return {}
    username = settings.username
    if not username:  # logged in through RH_TOKEN / RH_DEN_URL: ask Den
        client = DenClient(str(settings.den_url), settings.token)
        try:
            username = client.me()
        finally:
            client.close()
    return {"den_url": settings.den_url, "username": username}
