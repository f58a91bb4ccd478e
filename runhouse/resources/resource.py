"""The base of every resource: a name and a JSON-able ``config()`` it can be rebuilt from."""

from __future__ import annotations

from importlib import import_module
from typing import Any, ClassVar, TypeVar

from runhouse.exceptions import ConfigError
from runhouse.resources.store import LocalStore

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
}


class Resource:
    """Something with a name and a metadata signature (``config()``).

    ``Resource.from_config(cfg)`` rebuilds the right subclass from ``cfg["resource_type"]``.
    """

    RESOURCE_TYPE: ClassVar[str] = "resource"
    _registry: ClassVar[dict[str, type[Resource]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "RESOURCE_TYPE" in cls.__dict__:
            Resource._registry[cls.RESOURCE_TYPE] = cls

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def config(self) -> dict[str, Any]:
        return {"resource_type": self.RESOURCE_TYPE, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Resource:
        kind = config.get("resource_type")
        target = cls if kind == cls.RESOURCE_TYPE else Resource.type_named(str(kind))
        if target is None:
            known = ", ".join(sorted(_MODULES))
            raise ConfigError(f"unknown resource_type {kind!r} in config; expected one of {known}")
        if target is not cls and not issubclass(target, cls):
            raise ConfigError(f"config describes a {kind}, not a {cls.RESOURCE_TYPE}")
        return target._from_config(config)

    @staticmethod
    def type_named(resource_type: str) -> type[Resource] | None:
        """The class for a ``resource_type``, importing its module on first use."""
        if resource_type not in Resource._registry and resource_type in _MODULES:
            import_module(_MODULES[resource_type])
        return Resource._registry.get(resource_type)

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Resource:
        return cls(name=config.get("name"))

    # -- saving by name (see runhouse.resources.store) -----------------------------------------
    def save(self, name: str | None = None) -> Resource:
        """Save this resource's config under its name (``~/name``: this machine's local store)."""
        target = self.name if name is None else name
        if target is None:
            raise ConfigError("give the resource a name to save it: .save(name='...')")
        LocalStore().save(target, self.config())
        self.name = self.name or target
        return self

    def delete_configs(self) -> None:
        """Remove this resource's saved config (the live objects on clusters stay)."""
        if self.name:
            LocalStore().delete(self.name)

    @staticmethod
    def from_name(name: str) -> Resource:
        """Load a saved resource by name."""
        return Resource.from_config(LocalStore().load(name))

    @classmethod
    def load(cls: type[R], name: str) -> R:
        """Load a saved resource by name, checking it is one of these."""
        saved = Resource.from_name(name)
        if not isinstance(saved, cls):
            raise ConfigError(
                f"the saved resource {name!r} is a {saved.RESOURCE_TYPE}, not a {cls.RESOURCE_TYPE}"
            )
        return saved

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
