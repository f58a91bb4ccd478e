"""``/v1/resources``: save (each PUT a new version), read, history, list, delete, visibility, shares."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from runhouse.den import registry
from runhouse.den.auth import Caller
from runhouse.den.errors import InvalidInput
from runhouse.den.limits import MAX_HISTORY_LIMIT, shown, text_problem
from runhouse.den.models import Resource, as_utc
from runhouse.den.names import Visibility, check_resource_name, check_username
from runhouse.den.routes.deps import Db, UserToken
from runhouse.den.schemas import (
    AccessEntry,
    AccessPut,
    Deleted,
    HistoryEntry,
    ResourceListed,
    ResourceOut,
    ResourcePut,
    ResourceSaved,
    Revoked,
    VisibilityPut,
)

router = APIRouter(prefix="/v1/resources", tags=["resources"])


def saved(owner: str, resource: Resource) -> ResourceSaved:
    return ResourceSaved(
        owner=owner,
        name=resource.name,
        version=resource.version,
        resource_type=resource.resource_type,
        visibility=resource.visibility,  # type: ignore[arg-type]
    )


@router.put("/{owner}/{name}")
async def put_resource(owner: str, name: str, body: ResourcePut, token: UserToken, db: Db) -> ResourceSaved:
    """Save a new version of /owner/name (created by its owner on first save; then needs write)."""
    check_username(owner)
    check_resource_name(name)
    text = registry.encode_config(body.config)
    resource_type = str(body.config["resource_type"])
    if resource_type == registry.SECRET_TYPE:
        raise InvalidInput(f"save secrets with PUT /v1/secrets/{owner}/{name}, which encrypts their values")
    return await db.write(
        token,
        lambda s, caller: saved(
            owner, registry.save_version(s, caller, owner, name, text, resource_type, body.visibility)
        ),
    )


@router.get("/{owner}/{name}")
async def get_resource(owner: str, name: str, token: UserToken, db: Db) -> ResourceOut:
    """The latest version of /owner/name; needs read."""

    def read(session: Session, caller: Caller) -> ResourceOut:
        resource = registry.require_resource(session, owner, name)
        level = registry.require_access(session, caller, resource, owner, "read")
        return ResourceOut(
            owner=owner,
            name=resource.name,
            config=registry.load_config(resource.config),
            version=resource.version,
            visibility=resource.visibility,  # type: ignore[arg-type]
            resource_type=resource.resource_type,
            access_level=level,
            updated_at=as_utc(resource.updated_at),  # type: ignore[arg-type]
            updated_by=resource.updated_by,
        )

    return await db.read(token, read)


@router.get("/{owner}/{name}/history")
async def get_history(
    owner: str,
    name: str,
    token: UserToken,
    db: Db,
    limit: int | None = Query(
        default=None, ge=1, le=MAX_HISTORY_LIMIT, description="At most this many, newest first."
    ),
) -> list[HistoryEntry]:
    """Every saved version of /owner/name, newest first; needs read."""

    def read(session: Session, caller: Caller) -> list[HistoryEntry]:
        resource = registry.require_resource(session, owner, name)
        registry.require_access(session, caller, resource, owner, "read")
        return [
            HistoryEntry(
                version=v.version,
                config=registry.load_config(v.config),
                created_at=as_utc(v.created_at),  # type: ignore[arg-type]
                created_by=v.created_by,
            )
            for v in registry.history(session, resource, limit)
        ]

    return await db.read(token, read)


@router.delete("/{owner}/{name}")
async def delete_resource(owner: str, name: str, token: UserToken, db: Db) -> Deleted:
    """Delete /owner/name with its history, shares and secret values; needs write."""
    await db.write(token, lambda s, caller: registry.remove(s, caller, owner, name))
    return Deleted(deleted=True)


@router.get("")
async def list_resources(
    token: UserToken,
    db: Db,
    owner: str | None = None,
    resource_type: str | None = None,
) -> list[ResourceListed]:
    """What the caller may see: their own, shared with them, and public resources."""
    if resource_type is not None and (len(resource_type) > 128 or text_problem(resource_type)):
        raise InvalidInput(
            f"invalid resource_type={shown(resource_type)}: a resource type is at most 128 characters "
            "of valid text, without NUL"
        )

    def read(session: Session, caller: Caller) -> list[ResourceListed]:
        return [
            ResourceListed(
                owner=owner_name,
                name=r.name,
                resource_type=r.resource_type,
                visibility=r.visibility,  # type: ignore[arg-type]
                access_level=level,
                version=r.version,
                updated_at=as_utc(r.updated_at),  # type: ignore[arg-type]
            )
            for r, owner_name, level in registry.listing(session, caller, owner, resource_type)
        ]

    return await db.read(token, read)


@router.put("/{owner}/{name}/visibility")
async def put_visibility(
    owner: str, name: str, body: VisibilityPut, token: UserToken, db: Db
) -> ResourceSaved:
    """Make /owner/name private, unlisted or public; needs write."""
    visibility: Visibility = body.visibility
    return await db.write(
        token, lambda s, caller: saved(owner, registry.set_visibility(s, caller, owner, name, visibility))
    )


@router.put("/{owner}/{name}/access/{username}")
async def put_access(
    owner: str, name: str, username: str, body: AccessPut, token: UserToken, db: Db
) -> AccessEntry:
    """Give a user read, write or denied on /owner/name (denied beats visibility); needs write."""
    await db.write(
        token, lambda s, caller: registry.share(s, caller, owner, name, username, body.access_level)
    )
    return AccessEntry(username=username, access_level=body.access_level)


@router.delete("/{owner}/{name}/access/{username}")
async def delete_access(owner: str, name: str, username: str, token: UserToken, db: Db) -> Revoked:
    """Remove a user's explicit share (visibility still applies); needs write."""
    await db.write(token, lambda s, caller: registry.unshare(s, caller, owner, name, username))
    return Revoked(revoked=True)


@router.get("/{owner}/{name}/access")
async def get_access(owner: str, name: str, token: UserToken, db: Db) -> list[AccessEntry]:
    """The explicit shares of /owner/name; needs read."""

    def read(session: Session, caller: Caller) -> list[AccessEntry]:
        resource = registry.require_resource(session, owner, name)
        registry.require_access(session, caller, resource, owner, "read")
        return [
            AccessEntry(username=u, access_level=level)  # type: ignore[arg-type]
            for u, level in registry.shares(session, resource)
        ]

    return await db.read(token, read)
