"""Request and reply bodies of Den's HTTP API (docs/den-api.md), as pydantic models.

FastAPI validates requests against these (a wrong type is a 422) and documents them in
``/openapi.json``. Checks that need a helpful message of our own (names, sizes, the
``resource_type`` of a config) are made by the routes and raise 400/413 instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from runhouse.den.names import Level, ShareLevel, Visibility

EventKind = Literal["cluster_up", "cluster_down", "deploy", "call"]
MAX_EVENTS = 1000


class Health(BaseModel):
    status: str
    version: str
    db: str


class Me(BaseModel):
    username: str


class TokenCreate(BaseModel):
    name: str | None = Field(default=None, max_length=128)
    expires_in_s: int | None = Field(default=None, gt=0)


class TokenCreated(BaseModel):
    id: str
    token: str = Field(description="The secret itself; Den shows it only this once.")
    name: str | None
    scope: str
    expires_at: datetime | None


class TokenInfo(BaseModel):
    id: str
    name: str | None
    scope: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


class ClusterTokenCreate(BaseModel):
    cluster: str = Field(description="The cluster's URI, /owner/name.")
    name: str | None = Field(default=None, max_length=128)
    expires_in_s: int | None = Field(default=None, gt=0)


class AuthCheck(BaseModel):
    token: str = Field(description="The token the daemon's caller presented.")
    resource: str | None = Field(default=None, description="A URI; null means the daemon's cluster.")


class AuthCheckResult(BaseModel):
    username: str
    access_level: Level


class Revoked(BaseModel):
    revoked: bool


class Deleted(BaseModel):
    deleted: bool


class ResourcePut(BaseModel):
    config: dict[str, Any] = Field(description='A JSON object with a string "resource_type".')
    visibility: Visibility | None = None


class ResourceSaved(BaseModel):
    owner: str
    name: str
    version: int
    resource_type: str
    visibility: Visibility


class ResourceOut(BaseModel):
    owner: str
    name: str
    config: dict[str, Any]
    version: int
    visibility: Visibility
    resource_type: str
    access_level: Level
    updated_at: datetime
    updated_by: str


class ResourceListed(BaseModel):
    owner: str
    name: str
    resource_type: str
    visibility: Visibility
    access_level: Level
    version: int
    updated_at: datetime


class HistoryEntry(BaseModel):
    version: int
    config: dict[str, Any]
    created_at: datetime
    created_by: str


class VisibilityPut(BaseModel):
    visibility: Visibility


class AccessPut(BaseModel):
    access_level: ShareLevel


class AccessEntry(BaseModel):
    username: str
    access_level: ShareLevel


class SecretPut(BaseModel):
    values: dict[str, str]
    provider: str | None = Field(default=None, max_length=128)
    visibility: Visibility | None = None


class SecretOut(BaseModel):
    values: dict[str, str]
    provider: str | None
    version: int


class Event(BaseModel):
    kind: EventKind
    cluster: str = Field(description="The cluster's URI, /owner/name.")
    resource: str | None = Field(default=None, max_length=258)
    count: int = Field(default=1, ge=1, le=1_000_000_000)
    username: str | None = None


class Events(BaseModel):
    events: list[Event]


class Recorded(BaseModel):
    recorded: int


class UsageRow(BaseModel):
    username: str
    cluster: str
    kind: str
    resource: str | None
    count: int
    first: datetime
    last: datetime


class Heartbeat(BaseModel):
    status: dict[str, Any]


class Ok(BaseModel):
    ok: bool


class ClusterStatus(BaseModel):
    status: dict[str, Any] | None
    last_heartbeat: datetime | None
    seconds_ago: float | None
