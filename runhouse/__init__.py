"""runhouse: send Python functions and classes to your own compute and call them as if local.

::

    import runhouse as rh

    cluster = rh.cluster(name="local", host="localhost", server_connection_type="none").up_if_not()
    remote_add = rh.function(add).to(cluster)
    remote_add(1, 2)

``rh.here`` is the daemon on this machine (built when first used, not at import).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from runhouse._version import __version__

# Public names and the module each lives in. They load on first use, so the daemon and worker
# processes (which import runhouse.server.*) never pay for the client-side modules.
_EXPORTS = {
    "AuthError": "runhouse.exceptions",
    "BadRequest": "runhouse.exceptions",
    "ConfigError": "runhouse.exceptions",
    "ConnectionError_": "runhouse.exceptions",
    "ObjectNotFound": "runhouse.exceptions",
    "RemoteException": "runhouse.exceptions",
    "RunhouseError": "runhouse.exceptions",
    "ServerError": "runhouse.exceptions",
    "WorkerDied": "runhouse.exceptions",
    "RemoteResult": "runhouse.resources.calls",
    "Cluster": "runhouse.resources.cluster",
    "cluster": "runhouse.resources.cluster",
    "OnDemandCluster": "runhouse.resources.ondemand",
    "ondemand_cluster": "runhouse.resources.ondemand",
    "Env": "runhouse.resources.env",
    "CondaEnv": "runhouse.resources.env",
    "env": "runhouse.resources.env",
    "conda_env": "runhouse.resources.env",
    "EnvSetupError": "runhouse.exceptions",
    "Function": "runhouse.resources.function",
    "function": "runhouse.resources.function",
    "Module": "runhouse.resources.module",
    "RemoteModule": "runhouse.resources.module",
    "module": "runhouse.resources.module",
    "Resource": "runhouse.resources.resource",
    "Package": "runhouse.resources.package",
    "package": "runhouse.resources.package",
    "Folder": "runhouse.resources.folder",
    "folder": "runhouse.resources.folder",
    "Secret": "runhouse.resources.secret",
    "secret": "runhouse.resources.secret",
    "provider_secret": "runhouse.resources.secret",
    "SSHError": "runhouse.exceptions",
    "login": "runhouse.client.login",
    "logout": "runhouse.client.login",
}

__all__ = sorted([*_EXPORTS, "__version__", "here", "exists"])

if TYPE_CHECKING:
    from runhouse.client.login import login, logout
    from runhouse.exceptions import (
        AuthError,
        BadRequest,
        ConfigError,
        ConnectionError_,
        EnvSetupError,
        ObjectNotFound,
        RemoteException,
        RunhouseError,
        ServerError,
        SSHError,
        WorkerDied,
    )
    from runhouse.resources.calls import RemoteResult
    from runhouse.resources.cluster import Cluster, cluster
    from runhouse.resources.env import CondaEnv, Env, conda_env, env
    from runhouse.resources.folder import Folder, folder
    from runhouse.resources.function import Function, function
    from runhouse.resources.module import Module, RemoteModule, module
    from runhouse.resources.ondemand import OnDemandCluster, ondemand_cluster
    from runhouse.resources.package import Package, package
    from runhouse.resources.resource import Resource
    from runhouse.resources.secret import Secret, provider_secret, secret


def __getattr__(name: str) -> Any:
    if name == "here":  # a fresh handle each time: the daemon on this machine
        return import_module("runhouse.resources.cluster").here()
    if name == "exists":
        return _exists
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'runhouse' has no attribute {name!r}")
    value = getattr(import_module(module_name), name)
    globals()[name] = value
    return value


def _exists(name: str) -> bool:
    """Whether a resource (or secret) is saved under ``name`` (in Den for ``/owner/name``, or for a
    plain name while logged in; in the local store otherwise)."""
    settings = import_module("runhouse.settings").load_settings()
    store_mod = import_module("runhouse.resources.store")
    address = store_mod.den_address(name, settings)
    if address is not None:
        client = import_module("runhouse.resources.den").den_client(settings)
        return bool(client.exists(*address.split("/")[1:]))
    store = store_mod.LocalStore(settings)
    key = store_mod.local_name(name)
    return bool(store.exists(key) or store.exists(key, secret=True))


def __dir__() -> list[str]:
    return __all__
