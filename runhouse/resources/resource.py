"""The base of every resource: a name and a JSON-able ``config()`` it can be rebuilt from."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib import import_module
from typing import Any, ClassVar, TypeVar

from runhouse.exceptions import ConfigError
from runhouse.resources.den import den_client
from runhouse.resources.store import LocalStore, den_address, local_name, rns_address_of
from runhouse.settings import Settings, load_settings

R = TypeVar("R", bound="Resource")

# Where each resource type is defined, so configs can be rebuilt in a process that has not
# imported that module yet.
_MODULES = {
    "cluster": "runhouse.resources.cluster",
    "env": "runhouse.resources.env",
    "conda_env": "runhouse.resources.env",
    "function": "runhouse.resources.function",
    "module": "runhouse.resources.module",
    "secret": "runhouse.resources.secret",
    "package": "runhouse.resources.package",
    "folder": "runhouse.resources.folder",
}


VISIBILITIES = ("private", "unlisted", "public")


class Resource:
    """Something with a name and a metadata signature (``config()``).

    ``Resource.from_config(cfg)`` rebuilds the right subclass from ``cfg["resource_type"]``.
    """

    RESOURCE_TYPE: ClassVar[str] = "resource"
    STORED_AS_SECRET: ClassVar[bool] = False  # kept in the local store's 0600 secrets folder
    _registry: ClassVar[dict[str, type[Resource]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "RESOURCE_TYPE" in cls.__dict__:
            Resource._registry[cls.RESOURCE_TYPE] = cls
        own = cls.__dict__.get("config")
        if callable(own) and "condensed" not in inspect.signature(own).parameters:
            cls.config = _with_condensed(own)  # type: ignore[method-assign]

    def __init__(
        self,
        name: str | None = None,
        dryrun: bool = False,
        access_level: str | None = None,
        visibility: str | None = None,
        provenance: Any = None,
    ) -> None:
        """``name`` may be a saved name: ``"~/x"`` (local store), ``"/owner/x"`` (Den) or ``"@/x"``
        (yours); the resource is then called ``x`` and ``rns_address`` says where it is saved.

        ``dryrun`` is accepted as the original took it (constructors here never touch a system);
        ``access_level`` and ``visibility`` describe a resource loaded from Den."""
        if not isinstance(dryrun, bool):
            raise ConfigError("dryrun must be True or False")
        if provenance is not None:
            raise ConfigError("provenance= (run records of the original) is not supported")
        if visibility is not None and visibility not in VISIBILITIES:
            raise ConfigError(f"visibility must be one of {', '.join(VISIBILITIES)}, got {visibility!r}")
        # where this resource is saved: "/owner/name" in Den, "~/name" in the local store, or None
        self.rns_address: str | None = None
        if name is not None and name.startswith(("~/", "/", "@/")):
            self.rns_address = rns_address_of(name, load_settings())
            name = self.rns_address.rsplit("/", 1)[-1]
        self.name = name
        self.dryrun = dryrun
        self.access_level = access_level
        self.visibility = visibility

    @property
    def resource_subtype(self) -> str:
        """The class of this resource (``"CondaEnv"``, ``"Cluster"``...), as configs record it."""
        return type(self).__name__

    def config(self) -> dict[str, Any]:
        """This resource's metadata, from which ``Resource.from_config`` rebuilds it.

        ``config(condensed=True)`` (on every resource class) names nested resources that are saved
        (by their ``rns_address``) instead of repeating their whole config."""
        cfg: dict[str, Any] = {
            "resource_type": self.RESOURCE_TYPE,
            "resource_subtype": self.resource_subtype,
            "name": self.name,
        }
        if self.rns_address:
            cfg["rns_address"] = self.rns_address
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any] | str) -> Resource:
        if isinstance(config, str):  # a condensed config's reference to a saved resource
            return cls.load(config) if cls is not Resource else Resource.from_name(config)
        kind = config.get("resource_type")
        target = cls if kind == cls.RESOURCE_TYPE else Resource.type_named(str(kind))
        if target is None:
            known = ", ".join(sorted(_MODULES))
            raise ConfigError(f"unknown resource_type {kind!r} in config; expected one of {known}")
        if target is not cls and not issubclass(target, cls):
            raise ConfigError(f"config describes a {kind}, not a {cls.RESOURCE_TYPE}")
        built = target._from_config(config)
        if config.get("rns_address") and not built.rns_address:
            built.rns_address = config["rns_address"]
        return built

    @staticmethod
    def type_named(resource_type: str) -> type[Resource] | None:
        """The class for a ``resource_type``, importing its module on first use."""
        if resource_type not in Resource._registry and resource_type in _MODULES:
            import_module(_MODULES[resource_type])
        return Resource._registry.get(resource_type)

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Resource:
        return cls(name=config.get("name"))

    # -- saving by name: "~/name" in the local store, "/owner/name" in Den -------------------------
    def save(self: R, name: str | None = None, visibility: str | None = None) -> R:
        """Save this resource's config by name.

        Logged in to Den (``runhouse login``), a plain name saves to ``/<you>/<name>`` in Den and
        ``/owner/name`` to that owner's namespace (with write access); otherwise, and for ``~/name``,
        it goes to this machine's local store. ``visibility`` (Den only): private, unlisted or public.
        """
        target = name if name is not None else (self.rns_address or self.name)
        if target is None:
            raise ConfigError("give the resource a name to save it: .save(name='...')")
        settings = load_settings()
        address = den_address(target, settings)
        if address is None:
            key = local_name(target)
            if visibility is not None:
                raise ConfigError(
                    "visibility applies to resources saved in Den; log in with `runhouse login`"
                )
            if self.name is None:
                self.name = key
            self.rns_address = f"~/{key}"
            LocalStore(settings).save(key, self._local_record(), secret=self.STORED_AS_SECRET)
            return self
        owner, short = address.split("/")[1:]
        if self.name is None:
            self.name = short
        self.rns_address = address
        self._save_to_den(owner, short, visibility)
        return self

    def _local_record(self) -> dict[str, Any]:
        return self.config()

    def _save_to_den(self, owner: str, name: str, visibility: str | None) -> None:
        den_client(load_settings()).put_resource(owner, name, self.config(), visibility)

    def delete_configs(self) -> None:
        """Remove this resource's saved config (the live objects on clusters stay)."""
        target = self.rns_address or self.name
        if not target:
            return
        settings = load_settings()
        address = den_address(target, settings)
        if address is None:
            LocalStore(settings).delete(local_name(target), secret=self.STORED_AS_SECRET)
        else:
            den_client(settings).delete_resource(*address.split("/")[1:])
        self.rns_address = None

    @staticmethod
    def from_name(name: str) -> Resource:
        """Load a saved resource by name (``~/x`` locally, ``/owner/x`` or a plain name from Den when
        logged in)."""
        return Resource.from_config(saved_config(name))

    @classmethod
    def load(cls: type[R], name: str) -> R:
        """Load a saved resource by name, checking it is one of these."""
        saved = Resource.from_name(name)
        if not isinstance(saved, cls):
            raise ConfigError(
                f"the saved resource {name!r} is a {saved.RESOURCE_TYPE}, not a {cls.RESOURCE_TYPE}"
            )
        return saved

    # -- sharing (Den) ----------------------------------------------------------------------------------
    def _den_address(self) -> tuple[Settings, str, str]:
        settings = load_settings()
        target = self.rns_address or self.name
        address = den_address(target, settings) if target else None
        if address is None:
            raise ConfigError(
                f"{self.name!r} is not saved in Den: log in (`runhouse login`) and call .save() first"
            )
        owner, name = address.split("/")[1:]
        return settings, owner, name

    def share(self, users: str | list[str], access_level: str = "read") -> None:
        """Give users ``read`` (load and call), ``write`` (also change and redeploy) or ``denied`` access."""
        settings, owner, name = self._den_address()
        client = den_client(settings)
        for user in [users] if isinstance(users, str) else users:
            client.share(owner, name, user, access_level)

    def revoke(self, users: str | list[str]) -> None:
        """Take back what :meth:`share` gave."""
        settings, owner, name = self._den_address()
        client = den_client(settings)
        for user in [users] if isinstance(users, str) else users:
            client.revoke(owner, name, user)

    def set_visibility(self, visibility: str) -> None:
        """``private`` (owner and shares), ``unlisted`` (anyone with the name) or ``public``."""
        settings, owner, name = self._den_address()
        den_client(settings).set_visibility(owner, name, visibility)

    def history(self) -> list[dict[str, Any]]:
        """Every saved version of this resource in Den, newest first: version, config, when, by whom."""
        settings, owner, name = self._den_address()
        return den_client(settings).history(owner, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _with_condensed(config: Callable[[Any], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Give a subclass's ``config(self)`` the ``condensed`` argument."""

    def wrapped(self: Resource, condensed: bool = False) -> dict[str, Any]:
        cfg = config(self)
        return condense(cfg) if condensed else cfg

    wrapped.__doc__ = config.__doc__ or Resource.config.__doc__
    wrapped.__name__ = "config"
    return wrapped


def condense(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with each nested config of a saved resource replaced by its ``rns_address``."""

    def shrink(value: Any) -> Any:
        if isinstance(value, dict) and value.get("resource_type") and value.get("rns_address"):
            return value["rns_address"]
        if isinstance(value, list):
            return [shrink(v) for v in value]
        return value

    return {key: shrink(value) for key, value in cfg.items()}


Resource.config = _with_condensed(Resource.config)  # type: ignore[method-assign]


def saved_config(name: str) -> dict[str, Any]:
    """The saved config of resource ``name`` (``~/x`` from the local store, ``/owner/x`` or a plain
    name from Den when logged in), with the ``rns_address`` it was read from."""
    settings = load_settings()
    address = den_address(name, settings)
    if address is None:
        key = local_name(name)
        config = dict(LocalStore(settings).load(key))
        config.setdefault("rns_address", f"~/{key}")
        return config
    record = den_client(settings).get_resource(*address.split("/")[1:])
    return dict(record["config"], rns_address=address)
