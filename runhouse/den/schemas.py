"""Request and reply bodies of Den's HTTP API (docs/den-api.md), as pydantic models.

FastAPI validates requests against these (a wrong type is a 422) and documents them in
``/openapi.json``. Checks that need a helpful message of our own (names, sizes, the
``resource_type`` of a config) are made by the routes and raise 400/413 instead. Strings Den
stores are :data:`Text` (no NUL, valid Unicode) and token lifetimes :data:`Lifetime` (bounded),
both refused with a 422 that says the rule.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from runhouse.den.limits import MAX_TOKEN_LIFETIME_S, text_problem, token_lifetime_problem
from runhouse.den.names import Level, ShareLevel, Visibility

EventKind = Literal["cluster_up", "cluster_down", "deploy", "call"]
MAX_EVENTS = 1000


def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise PydanticCustomError("den_text", "the text {problem}", {"problem": problem})
    return value


def _lifetime(value: object) -> object:
    problem = token_lifetime_problem(value)
    if problem:
        raise PydanticCustomError("den_token_lifetime", "{problem}", {"problem": problem})
    return value


Text = Annotated[str, AfterValidator(_storable)]
Lifetime = Annotated[int, Field(ge=1, le=MAX_TOKEN_LIFETIME_S), BeforeValidator(_lifetime)]
LIFETIME_HELP = f"Lifetime in seconds, 1 to {MAX_TOKEN_LIFETIME_S} (366 days); null: never expires."


class Health(BaseModel):
    status: str
    version: str
    db: str


class Me(BaseModel):
    username: str


class TokenCreate(BaseModel):
    name: Text | None = Field(default=None, max_length=128)
    expires_in_s: Lifetime | None = Field(default=None, description=LIFETIME_HELP)


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
    name: Text | None = Field(default=None, max_length=128)
    expires_in_s: Lifetime | None = Field(default=None, description=LIFETIME_HELP)


class AuthCheck(BaseModel):
    token: Text = Field(description="The token the daemon's caller presented.", max_length=4096)
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
    values: dict[Text, Text]
    provider: Text | None = Field(default=None, max_length=128)
    visibility: Visibility | None = None


class SecretOut(BaseModel):
    values: dict[str, str]
    provider: str | None
    version: int


class Event(BaseModel):
    kind: EventKind
    cluster: str = Field(description="The cluster's URI, /owner/name.")
    resource: Text | None = Field(default=None, max_length=258)
    count: int = Field(default=1, ge=1, le=1_000_000_000)
    username: Text | None = None


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
