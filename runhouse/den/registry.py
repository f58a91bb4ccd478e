"""Resources by ``/owner/name``: saving versions, reading, listing, deleting, access levels, shares.

Every function takes the :class:`~sqlalchemy.orm.Session` of the transaction it runs in (see
:meth:`runhouse.den.db.Database.write` for how write races are settled) and raises Den errors
that name the user, the resource and the access needed.

Access for a user: the owner has ``write``; an explicit share row gives ``read``, ``write`` or
``denied`` (denied beats visibility); otherwise ``unlisted`` and ``public`` resources are readable
by any authenticated user and ``private`` ones by nobody else.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from sqlalchemy import Select, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from runhouse.den.auth import Caller, cluster_scope, daemon_scope
from runhouse.den.errors import Forbidden, InvalidInput, NotFound, TooLarge
from runhouse.den.limits import json_problem, text_problem
from runhouse.den.models import Resource, ResourceVersion, Share, Token, User, utc_now
from runhouse.den.names import Level, at_least, check_resource_name, check_username, uri

MAX_CONFIG_BYTES = 1024 * 1024
SECRET_TYPE = "secret"
_READ_BY_ALL = ("unlisted", "public")


def encode_config(config: dict[str, Any], what: str = "config") -> str:
    """The JSON text Den stores for ``config``; 400 without a string resource_type, nested too deeply
    or holding text Den cannot serve back; 413 over 1 MiB."""
    resource_type = config.get("resource_type")
    if what == "config" and (not isinstance(resource_type, str) or not resource_type):
        raise InvalidInput('the config must be a JSON object with a non-empty string "resource_type"')
    if isinstance(resource_type, str) and len(resource_type) > 128:
        raise InvalidInput("resource_type is limited to 128 characters")
    if isinstance(resource_type, str) and (problem := text_problem(resource_type)):
        raise InvalidInput(f"resource_type {problem}")
    if problem := json_problem(config):
        raise InvalidInput(f"the {what} {problem}")
    text = dump_json(config, what)
    size = len(text.encode())
    if size > MAX_CONFIG_BYTES:
        raise TooLarge(
            f"the {what} is {size} bytes serialized; Den stores at most {MAX_CONFIG_BYTES} bytes "
            "(1 MiB). Keep large data out of configs"
        )
    return text


def dump_json(value: dict[str, Any], what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except ValueError as e:  # NaN or Infinity, which JSON itself cannot carry
        raise InvalidInput(f"the {what} holds a value JSON cannot represent: {e}") from e


def load_config(text: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(text)
    return config


def find_user(session: Session, username: str) -> User | None:
    return session.execute(select(User).where(User.username == username)).scalar_one_or_none()


def require_user(session: Session, username: str) -> User:
    user = find_user(session, check_username(username))
    if user is None:
        raise NotFound(f"no user named {username!r} in this Den")
    return user


def find_resource(session: Session, owner: str, name: str, lock: bool = False) -> Resource | None:
    query = (
        select(Resource)
        .join(User, Resource.owner_id == User.id)
        .where(User.username == owner, Resource.name == name)
    )
    if lock:
        query = query.with_for_update(of=Resource)
    return session.execute(query).scalar_one_or_none()


def require_resource(session: Session, owner: str, name: str, lock: bool = False) -> Resource:
    check_username(owner)
    check_resource_name(name)
    resource = find_resource(session, owner, name, lock)
    if resource is None:
        raise NotFound(f"no resource {uri(owner, name)} in this Den")
    return resource


def level_of(user_id: int, owner_id: int, visibility: str, share: str | None) -> Level:
    """The access rule (module docstring) for a resource's owner, visibility and the user's share."""
    if owner_id == user_id:
        return "write"
    if share is not None:
        return "none" if share == "denied" else share  # type: ignore[return-value]
    return "read" if visibility in _READ_BY_ALL else "none"


def access_level(session: Session, user_id: int, resource: Resource) -> Level:
    share = session.get(Share, (resource.id, user_id))
    return level_of(
        user_id, resource.owner_id, resource.visibility, None if share is None else share.access_level
    )


Q = TypeVar("Q", bound=Select)


def readable_resources(query: Q, user_id: int, listed: bool = True, owner_joined: bool = False) -> Q:
    """``query`` (selecting from ``resources``) joined to owners (``User``; pass ``owner_joined``
    when ``query`` already joins them) and the user's share (``Share``, for ``level_of``) and kept
    to the resources the user may list, or with ``listed=False`` all they may read: :func:`level_of`
    in SQL. Listed are their own, those shared with them (not denied) and public ones; readable adds
    unlisted ones."""
    share = Share.access_level
    by_all = ("public",) if listed else _READ_BY_ALL
    if not owner_joined:
        query = query.join(User, Resource.owner_id == User.id)
    return query.outerjoin(Share, and_(Share.resource_id == Resource.id, Share.user_id == user_id)).where(
        or_(
            Resource.owner_id == user_id,
            share.in_(("read", "write")),
            and_(share.is_(None), Resource.visibility.in_(by_all)),
        )
    )


def require_access(session: Session, caller: Caller, resource: Resource, owner: str, needed: Level) -> Level:
    level = access_level(session, caller.user_id, resource)
    if not at_least(level, needed):
        raise Forbidden(
            f"user {caller.username} needs {needed} access to {uri(owner, resource.name)} but has "
            f"{level}; ask {owner} (or another writer) to share it with them"
        )
    return level


def save_version(
    session: Session,
    caller: Caller,
    owner: str,
    name: str,
    config_text: str,
    resource_type: str,
    visibility: str | None,
) -> Resource:
    """Append a version to ``/owner/name`` (creating it for its owner). The row is locked first so
    that concurrent saves get consecutive version numbers."""
    check_username(owner)
    check_resource_name(name)
    now = utc_now()
    resource = find_resource(session, owner, name, lock=True)
    if resource is None:
        if owner != caller.username:
            raise Forbidden(
                f"user {caller.username} may not create {uri(owner, name)}: only {owner} creates "
                f"resources under /{owner}/ (save under /{caller.username}/ instead)"
            )
        resource = Resource(
            owner_id=caller.user_id,
            name=name,
            resource_type=resource_type,
            visibility=visibility or "private",
            version=1,
            config=config_text,
            created_at=now,
            updated_at=now,
            updated_by=caller.username,
        )
        session.add(resource)
        session.flush()
    else:
        require_access(session, caller, resource, owner, "write")
        if (resource.resource_type == SECRET_TYPE) != (resource_type == SECRET_TYPE):
            raise InvalidInput(
                f"{uri(owner, name)} is a {resource.resource_type}; it cannot become a {resource_type}. "
                "Delete it first or pick another name"
            )
        resource.version += 1
        resource.resource_type = resource_type
        resource.config = config_text
        resource.updated_at = now
        resource.updated_by = caller.username
        if visibility is not None:
            resource.visibility = visibility
    session.add(
        ResourceVersion(
            resource_id=resource.id,
            version=resource.version,
            config=config_text,
            created_at=now,
            created_by=caller.username,
        )
    )
    session.flush()
    return resource


def history(session: Session, resource: Resource, limit: int | None = None) -> list[ResourceVersion]:
    query = (
        select(ResourceVersion)
        .where(ResourceVersion.resource_id == resource.id)
        .order_by(ResourceVersion.version.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).scalars())


def listing(
    session: Session, caller: Caller, owner: str | None, resource_type: str | None
) -> list[tuple[Resource, str, Level]]:
    """What the caller may list (:func:`readable_resources`), by owner and name."""
    query = readable_resources(select(Resource, User.username, Share.access_level), caller.user_id).order_by(
        User.username, Resource.name
    )
    if owner is not None:
        query = query.where(User.username == check_username(owner))
    if resource_type is not None:
        query = query.where(Resource.resource_type == resource_type)
    return [
        (resource, owner_name, level_of(caller.user_id, resource.owner_id, resource.visibility, shared))
        for resource, owner_name, shared in session.execute(query).tuples()
    ]


def remove(session: Session, caller: Caller, owner: str, name: str) -> None:
    """Delete a resource with its history, shares, secret values and heartbeat (by cascade), and
    revoke the cluster and daemon tokens bound to it."""
    resource = require_resource(session, owner, name, lock=True)
    require_access(session, caller, resource, owner, "write")
    session.execute(delete(Resource).where(Resource.id == resource.id))
    bound = (cluster_scope(uri(owner, name)), daemon_scope(uri(owner, name)))
    session.execute(update(Token).where(Token.scope.in_(bound)).values(revoked=True))


def set_visibility(session: Session, caller: Caller, owner: str, name: str, visibility: str) -> Resource:
    resource = require_resource(session, owner, name, lock=True)
    require_access(session, caller, resource, owner, "write")
    resource.visibility = visibility
    return resource


def _share_target(
    session: Session, caller: Caller, owner: str, name: str, username: str
) -> tuple[Resource, User]:
    resource = require_resource(session, owner, name, lock=True)
    require_access(session, caller, resource, owner, "write")
    target = require_user(session, username)
    if target.id == resource.owner_id:
        raise InvalidInput(f"{username} owns {uri(owner, name)} and always has write access")
    return resource, target


def share(session: Session, caller: Caller, owner: str, name: str, username: str, level: str) -> None:
    resource, target = _share_target(session, caller, owner, name, username)
    row = session.get(Share, (resource.id, target.id), with_for_update=True)
    if row is None:
        session.add(Share(resource_id=resource.id, user_id=target.id, access_level=level))
    else:
        row.access_level = level
    session.flush()


def unshare(session: Session, caller: Caller, owner: str, name: str, username: str) -> None:
    resource, target = _share_target(session, caller, owner, name, username)
    row = session.get(Share, (resource.id, target.id))
    if row is None:
        raise NotFound(f"{username} has no explicit access to {uri(owner, name)} to revoke")
    session.delete(row)


def shares(session: Session, resource: Resource) -> list[tuple[str, str]]:
    query = (
        select(User.username, Share.access_level)
        .join(User, Share.user_id == User.id)
        .where(Share.resource_id == resource.id)
        .order_by(User.username)
    )
    return [(username, level) for username, level in session.execute(query).tuples()]
