"""Which worker holds which key, and what the client told us about each deployed object.

The daemon holds no user objects; this registry only maps a key to the env (worker) that holds
it, plus the metadata a client sent at deploy time (the resource config and method signature),
so another client can build a stub for the object by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runhouse.exceptions import BadRequest, ObjectNotFound

MAX_KEY_CHARS = 256


def check_key(value: Any, field: str = "key") -> str:
    """A key (or a run name, which may become a key) from a request: a non-empty string without
    '/' (keys are URL path segments), at most :data:`MAX_KEY_CHARS` long."""
    if not isinstance(value, str) or not value or "/" in value or len(value) > MAX_KEY_CHARS:
        raise BadRequest(
            f"{field!r} must be a non-empty name without '/', at most {MAX_KEY_CHARS} characters (got {value!r:.80})",
            400,
        )
    return value


@dataclass
class Entry:
    env: str
    kind: str = "object"  # object | function | class | module | result
    config: dict[str, Any] = field(default_factory=dict)


class ObjectRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def add(self, key: str, entry: Entry) -> None:
        self._entries[key] = entry

    def get(self, key: str) -> Entry:
        try:
            return self._entries[key]
        except KeyError:
            known = ", ".join(sorted(self._entries)[:20]) or "none"
            raise ObjectNotFound(
                f"no object named {key!r} on this cluster (keys: {known}); deploy or put it first", 404
            ) from None

    def find(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def remove(self, key: str) -> Entry | None:
        return self._entries.pop(key, None)

    def rename(self, old: str, new: str) -> None:
        self._entries[new] = self._entries.pop(old)

    def keys(self, env: str | None = None) -> list[str]:
        return [k for k, e in self._entries.items() if env is None or e.env == env]

    def drop_env(self, env: str) -> list[str]:
        gone = self.keys(env)
        for key in gone:
            del self._entries[key]
        return gone
