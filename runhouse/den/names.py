"""Names Den accepts: usernames, resource names, ``/owner/name`` URIs, access levels, visibility.

Every check raises :class:`~runhouse.den.errors.InvalidInput` with a message that shows the rule,
so a caller can fix the name without reading the docs.
"""

from __future__ import annotations

import re
from typing import Literal, cast

from runhouse.den.errors import InvalidInput
from runhouse.den.limits import shown

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
RESOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

Level = Literal["write", "read", "none"]
ShareLevel = Literal["read", "write", "denied"]
Visibility = Literal["private", "unlisted", "public"]

LEVEL_RANK: dict[str, int] = {"none": 0, "read": 1, "write": 2}
VISIBILITIES: tuple[str, ...] = ("private", "unlisted", "public")


def check_username(username: str) -> str:
    if not USERNAME_RE.match(username):
        raise InvalidInput(
            f"invalid username {shown(username)}: use 1-128 characters, letters, digits and _ . @ + -, "
            "starting with a letter or digit"
        )
    return username


def check_resource_name(name: str) -> str:
    if not RESOURCE_NAME_RE.match(name):
        raise InvalidInput(
            f"invalid resource name {shown(name)}: use 1-128 characters, letters, digits and _ . -, "
            "starting with a letter or digit (no '/': the owner is the first part of /owner/name)"
        )
    return name


def check_visibility(visibility: str) -> Visibility:
    if visibility not in VISIBILITIES:
        raise InvalidInput(f"invalid visibility {shown(visibility)}: use one of {', '.join(VISIBILITIES)}")
    return cast(Visibility, visibility)


def parse_uri(uri: str) -> tuple[str, str]:
    """``"/owner/name"`` -> ``("owner", "name")``, checking both parts."""
    parts = uri.split("/")
    if len(parts) != 3 or parts[0] != "":
        raise InvalidInput(
            f"invalid resource URI {shown(uri)}: write it as /owner/name, e.g. /alice/my-cluster"
        )
    return check_username(parts[1]), check_resource_name(parts[2])


def uri(owner: str, name: str) -> str:
    return f"/{owner}/{name}"


def at_least(level: str, needed: str) -> bool:
    return LEVEL_RANK[level] >= LEVEL_RANK[needed]
