"""``rh.secret`` and ``rh.provider_secret``: credentials saved once and used by name.

::

    rh.provider_secret("ssh", values={"ssh_user": "me"}, path="~/.ssh/id_ed25519", name="lab-key").save()
    lab = rh.cluster(name="lab", host=["10.0.0.5"], ssh_creds="lab-key")   # no key path in the config

A secret's values never appear in its ``config()``; saved locally they live in
``$RH_HOME/secrets/<name>.json`` with mode 0600.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any

from runhouse.exceptions import ConfigError
from runhouse.resources.resource import Resource
from runhouse.resources.store import LocalStore, local_name

# Where each provider's credentials usually live on a laptop, and which values they hold.
PROVIDERS: dict[str, dict[str, Any]] = {
    "ssh": {"paths": ["~/.ssh/id_ed25519", "~/.ssh/id_rsa"], "keys": ("ssh_user", "private_key", "password")},
    "aws": {
        "paths": ["~/.aws/credentials"],
        "keys": ("access_key", "secret_key"),
        "env": {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY"},
    },
    "huggingface": {
        "paths": ["~/.cache/huggingface/token"],
        "keys": ("token",),
        "env": {"token": "HF_TOKEN"},
    },
    "kubeconfig": {"paths": ["~/.kube/config"], "keys": ("kubeconfig",)},
    "gcp": {"paths": ["~/.config/gcloud/application_default_credentials.json"], "keys": ("credentials",)},
}


class Secret(Resource):
    RESOURCE_TYPE = "secret"

    def __init__(
        self, name: str | None = None, values: dict[str, str] | None = None, provider: str | None = None
    ) -> None:
        super().__init__(name)
        self.values = {str(k): str(v) for k, v in (values or {}).items()}
        self.provider = provider

    def config(self) -> dict[str, Any]:
        """Name, provider and the names of the values; never the values."""
        return {**super().config(), "provider": self.provider, "keys": sorted(self.values)}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Secret:
        name = config.get("name")
        if name and LocalStore().exists(name, secret=True):
            return secret(name=name)  # the values come from the store, never from the config
        return cls(name, {}, config.get("provider"))

    def save(self, name: str | None = None) -> Secret:
        self.name = name or self.name
        if not self.name:
            raise ConfigError("give the secret a name to save it: .save(name='...')")
        LocalStore().save(self.name, {"config": self.config(), "values": self.values}, secret=True)
        return self

    def delete_configs(self) -> None:
        if self.name:
            LocalStore().delete(self.name, secret=True)

    def env_vars(self) -> dict[str, str]:
        """The values as the environment variables their provider's tools read."""
        mapping = PROVIDERS.get(self.provider or "", {}).get("env", {})
        return {mapping[k]: v for k, v in self.values.items() if k in mapping}

    def __repr__(self) -> str:
        return f"<Secret {self.name!r} provider={self.provider!r} keys={sorted(self.values)}>"


def _read_provider_file(provider: str, path: Path) -> dict[str, str]:
    if provider == "aws":
        parser = configparser.ConfigParser()
        parser.read(path)
        section = parser["default"] if parser.has_section("default") else {}
        return {
            "access_key": section.get("aws_access_key_id", ""),
            "secret_key": section.get("aws_secret_access_key", ""),
        }
    if provider == "ssh":
        return {"private_key": path.read_text()}
    key = PROVIDERS[provider]["keys"][0]
    return {key: path.read_text().strip()}


def provider_secret(
    provider: str, values: dict[str, str] | None = None, path: str | None = None, name: str | None = None
) -> Secret:
    """Credentials of a known provider (``ssh``, ``aws``, ``huggingface``, ``kubeconfig``, ``gcp``),
    from ``values`` and/or the provider's usual file (or ``path``)."""
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}")
    merged: dict[str, str] = {}
    candidates = [path] if path else PROVIDERS[provider]["paths"]
    for candidate in candidates:
        file = Path(os.path.expanduser(candidate))
        if file.is_file():
            merged.update(_read_provider_file(provider, file))
            break
    else:
        if path:
            raise ConfigError(f"{path} does not exist")
    merged.update(values or {})
    if not merged:
        raise ConfigError(f"no {provider} credentials given and none found in {', '.join(candidates)}")
    return Secret(name or provider, merged, provider)


def secret(
    name: str | None = None, values: dict[str, str] | None = None, provider: str | None = None
) -> Secret:
    """A secret: ``rh.secret(values={...}, name="k").save()``; ``rh.secret(name="k")`` loads a saved one."""
    if values is None and name is not None:
        record = LocalStore().load(name, secret=True)
        config = record.get("config", {})
        return Secret(
            config.get("name") or local_name(name), record.get("values", {}), config.get("provider")
        )
    return Secret(name, values or {}, provider)
