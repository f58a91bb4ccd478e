"""``rh.secret`` and ``rh.provider_secret``: credentials saved once and used by name.

::

    rh.provider_secret("ssh", values={"ssh_user": "me"}, path="~/.ssh/id_ed25519", name="lab-key").save()
    lab = rh.cluster(name="lab", host=["10.0.0.5"], ssh_creds="lab-key")   # no key path in the config

A secret's values never appear in its ``config()``; saved locally they live in
``$RH_HOME/secrets/<name>.json`` with mode 0600.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runhouse.exceptions import ConfigError
from runhouse.resources.den import den_client
from runhouse.resources.resource import Resource
from runhouse.resources.store import LocalStore, den_address, local_name
from runhouse.settings import load_settings, provider_variables

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
    "kubernetes": {"paths": ["~/.kube/config"], "keys": ("kubeconfig",)},
    "gcp": {"paths": ["~/.config/gcloud/application_default_credentials.json"], "keys": ("credentials",)},
    # a service principal: the variables the Azure SDKs' EnvironmentCredential reads
    "azure": {
        "paths": [],
        "keys": ("client_id", "client_secret", "tenant_id", "subscription_id"),
        "env": {
            "client_id": "AZURE_CLIENT_ID",
            "client_secret": "AZURE_CLIENT_SECRET",
            "tenant_id": "AZURE_TENANT_ID",
            "subscription_id": "AZURE_SUBSCRIPTION_ID",
        },
    },
}

# The variable each provider's tools read to find their credentials file (SkyPilot and the clouds'
# SDKs honour them), so a launch can use a secret without it being in the usual place.
FILE_VARIABLES = {
    "aws": "AWS_SHARED_CREDENTIALS_FILE",
    "gcp": "GOOGLE_APPLICATION_CREDENTIALS",
    "kubeconfig": "KUBECONFIG",
    "kubernetes": "KUBECONFIG",
}


class Secret(Resource):
    RESOURCE_TYPE = "secret"
    STORED_AS_SECRET = True

    def __init__(
        self, name: str | None = None, values: dict[str, str] | None = None, provider: str | None = None
    ) -> None:
        super().__init__(name)
        self.values = {str(k): str(v) for k, v in (values or {}).items()}
        self.provider = provider
        # Value names from a config whose values are not on this machine (so its config still says them).
        self._key_names: tuple[str, ...] = ()

    def config(self) -> dict[str, Any]:
        """Name, provider and the names of the values; never the values."""
        keys = sorted(set(self.values) | set(self._key_names))
        return {**super().config(), "provider": self.provider, "keys": keys}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Secret:
        """The secret a config names, with its values from where it is saved (never from the config)."""
        name = config.get("name")
        address = config.get("rns_address") or name
        if address and str(address).startswith("/"):
            return secret(name=address)
        if name and LocalStore().exists(local_name(str(address)), secret=True):
            return secret(name=str(address))
        unsaved = cls(name, {}, config.get("provider"))
        unsaved._key_names = tuple(str(k) for k in config.get("keys") or ())
        return unsaved

    def _local_record(self) -> dict[str, Any]:
        return {"config": self.config(), "values": self.values}  # a 0600 file in the secrets folder

    def _save_to_den(self, owner: str, name: str, visibility: str | None) -> None:
        """Into Den's vault, encrypted; the values never go into a resource config."""
        client = den_client(load_settings())
        client.put_secret(owner, name, self.values, self.provider)
        if visibility is not None:
            client.set_visibility(owner, name, visibility)

    def to(
        self, system: Any, env: Any = None, method: str | None = None, path: str | None = None
    ) -> dict[str, list[str]]:
        """Put the secret on a cluster: as environment variables of ``env``'s worker and/or as the
        files its provider's tools read there (``~/.aws/credentials``, ``~/.ssh/<name>``, ...).

        ``method`` is ``"env"``, ``"file"`` or None (both, where the provider has them); ``path``
        picks the file. Returns the names of the variables and files set (never the values)."""
        if method not in (None, "env", "file"):
            raise ConfigError(f"method must be 'env', 'file' or None, not {method!r}")
        env_vars = self.env_vars() if method in (None, "env") else {}
        files = self.files(path) if method in (None, "file") else {}
        if method == "env" and not env_vars:
            raise ConfigError(f"secret {self.name!r} has no environment variables to set; use method='file'")
        if method == "file" and not files:
            raise ConfigError(
                f"secret {self.name!r} has no file form; give path= to write its values as JSON"
            )
        from runhouse.resources.function import function  # the cluster runs the installer as a function
        from runhouse.resources.secret_install import install_secret

        installer = function(install_secret).to(system, env=env, name="_rh_install_secret")
        try:
            return dict(installer(env_vars, files))
        finally:
            system.delete("_rh_install_secret")

    def files(self, path: str | None = None) -> dict[str, str]:
        """The files (path on the cluster -> text) this secret becomes for its provider's tools."""
        values = self.values
        if self.provider == "aws" and values.get("access_key"):
            text = (
                "[default]\n"
                f"aws_access_key_id = {values['access_key']}\n"
                f"aws_secret_access_key = {values.get('secret_key', '')}\n"
            )
            return {path or "~/.aws/credentials": text}
        if self.provider == "ssh" and values.get("private_key"):
            return {path or f"~/.ssh/{local_name(self.name or 'ssh')}": values["private_key"]}
        single = {
            "huggingface": "token",
            "kubeconfig": "kubeconfig",
            "kubernetes": "kubeconfig",
            "gcp": "credentials",
        }
        if self.provider in single and values.get(single[self.provider]):
            default = {
                "huggingface": "~/.cache/huggingface/token",
                "kubeconfig": "~/.kube/config",
                "kubernetes": "~/.kube/config",
            }.get(self.provider, "~/.config/gcloud/application_default_credentials.json")
            return {path or default: values[single[self.provider]]}
        if path:
            return {path: json.dumps(values)}
        return {}

    def env_vars(self) -> dict[str, str]:
        """The values as the environment variables their provider's tools read."""
        if self.provider is None:  # a plain secret: its keys are the variable names
            return {k: v for k, v in self.values.items() if k.isidentifier()}
        mapping = PROVIDERS.get(self.provider, {}).get("env", {})
        return {mapping[k]: v for k, v in self.values.items() if k in mapping}

    @contextmanager
    def provider_env(self) -> Iterator[dict[str, str]]:
        """The environment a provider's tools need to use this secret from this machine, for the
        duration of a ``with`` block: its file (``~/.aws/credentials`` text, a kubeconfig, ...) is
        written to a fresh 0700 folder as a 0600 file that the provider's variable
        (``AWS_SHARED_CREDENTIALS_FILE``, ``KUBECONFIG``, ...) names, and removed when the block ends;
        values with variables of their own (Azure's service principal) are passed as those.
        So a teammate granted a Den secret launches with it without the credentials on their disk."""
        variable = FILE_VARIABLES.get(self.provider or "")
        env = self.env_vars()
        files = self.files()
        if variable is None and not env:
            raise ConfigError(
                f"secret {self.name!r} (provider {self.provider!r}) is not cloud credentials; "
                f"use a secret of provider {', '.join(sorted({*FILE_VARIABLES, 'azure'}))}"
            )
        folder = Path(tempfile.mkdtemp(prefix="rh-creds-", dir=_private_tmp()))
        try:
            if variable is not None:
                if not files:
                    raise ConfigError(f"secret {self.name!r} has no {self.provider} credentials in it")
                path = folder / "credentials"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(next(iter(files.values())))
                env[variable] = str(path)
            yield env
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<Secret {self.name!r} provider={self.provider!r} keys={sorted(self.values)}>"


def _private_tmp() -> str | None:
    """Memory-backed /dev/shm where there is one (the file never reaches a disk), else the default."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


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
    """Credentials of a known provider (``ssh``, ``aws``, ``gcp``, ``azure``, ``kubernetes`` (or
    ``kubeconfig``), ``huggingface``), from ``values`` and/or the provider's usual file (or ``path``).

    ``rh.provider_secret("aws").save()`` puts this machine's AWS credentials in Den; a teammate it
    is shared with launches with them (``rh.cluster(..., provider="aws", provider_secret="/me/aws")``)
    without having them on disk."""
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
    if not merged and not path:  # e.g. Azure's service principal, usually in the environment
        variables = PROVIDERS[provider].get("env", {})
        found = provider_variables(variables.values())
        merged.update({k: found[v] for k, v in variables.items() if v in found})
    merged.update(values or {})
    if not merged:
        where = ", ".join([*candidates, *PROVIDERS[provider].get("env", {}).values()])
        raise ConfigError(f"no {provider} credentials given and none found in {where}")
    return Secret(name or provider, merged, provider)


def secret(
    name: str | None = None, values: dict[str, str] | None = None, provider: str | None = None
) -> Secret:
    """A secret: ``rh.secret(values={...}, name="k").save()``; ``rh.secret(name="k")`` loads a saved one."""
    if values is None and name is not None:
        settings = load_settings()
        address = den_address(name, settings)
        if address is not None:
            record = den_client(settings).get_secret(*address.split("/")[1:])
            loaded = Secret(address.split("/")[2], record.get("values") or {}, record.get("provider"))
            loaded.rns_address = address
            return loaded
        key = local_name(name)
        stored = LocalStore(settings).load(key, secret=True)
        config = stored.get("config", {})
        loaded = Secret(config.get("name") or key, stored.get("values", {}), config.get("provider"))
        loaded.rns_address = f"~/{key}"
        return loaded
    return Secret(name, values or {}, provider)
