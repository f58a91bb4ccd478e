"""``/v1/secrets``: secret resources whose values are stored only as Fernet ciphertext.

The resource's config (and so its history and listings) carries the value *names* only; each
saved version has its own ciphertext row, deleted with the resource.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from runhouse.den import registry
from runhouse.den.auth import Caller
from runhouse.den.errors import InvalidInput, NotFound, TooLarge
from runhouse.den.models import SecretValue
from runhouse.den.names import check_resource_name, check_username, uri
from runhouse.den.routes.deps import Db, UserToken
from runhouse.den.routes.resources import saved
from runhouse.den.schemas import ResourceSaved, SecretOut, SecretPut
from runhouse.den.vault import Vault

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])


def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


@router.put("/{owner}/{name}")
async def put_secret(
    owner: str, name: str, body: SecretPut, token: UserToken, db: Db, request: Request
) -> ResourceSaved:
    """Save a new version of secret /owner/name: values encrypted, their names in the config."""
    check_username(owner)
    check_resource_name(name)
    config = {
        "resource_type": registry.SECRET_TYPE,
        "name": uri(owner, name),
        "provider": body.provider,
        "keys": sorted(body.values),
    }
    text = registry.encode_config(config)
    if sum(len(k) + len(v) for k, v in body.values.items()) > registry.MAX_CONFIG_BYTES:
        raise TooLarge(f"the values of {uri(owner, name)} exceed 1 MiB; Den stores at most that")
    if any(not key for key in body.values):
        raise InvalidInput("secret value names must not be empty")
    ciphertext = _vault(request).seal(body.values)

    def work(session: Session, caller: Caller) -> ResourceSaved:
        resource = registry.save_version(
            session, caller, owner, name, text, registry.SECRET_TYPE, body.visibility
        )
        session.add(SecretValue(resource_id=resource.id, version=resource.version, ciphertext=ciphertext))
        return saved(owner, resource)

    return await db.write(token, work)


@router.get("/{owner}/{name}")
async def get_secret(owner: str, name: str, token: UserToken, db: Db, request: Request) -> SecretOut:
    """The latest values of secret /owner/name; needs read."""
    vault = _vault(request)

    def read(session: Session, caller: Caller) -> SecretOut:
        resource = registry.require_resource(session, owner, name)
        registry.require_access(session, caller, resource, owner, "read")
        row = session.get(SecretValue, (resource.id, resource.version))
        if resource.resource_type != registry.SECRET_TYPE or row is None:
            raise NotFound(f"{uri(owner, name)} is a {resource.resource_type}, not a secret")
        provider = registry.load_config(resource.config).get("provider")
        return SecretOut(values=vault.open(row.ciphertext), provider=provider, version=resource.version)

    return await db.read(token, read)
