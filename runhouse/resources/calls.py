"""Calling a remote callable: call options, the stub shared by functions and methods, and the
handle a ``.remote()`` call returns.

Call options are kept apart from user arguments. They are given with ``.options(...)`` (checked
against :data:`CALL_OPTIONS`; an unknown name is an error listing the valid ones) or as keyword
arguments to the call, in which case a keyword the user's own function declares is passed to the
function instead: ``fn(x, stream_logs=False)`` gives ``stream_logs`` to ``fn`` if ``fn`` has such
a parameter.

``timeout=`` (seconds) bounds a call on the cluster: past it the call is cancelled there and
raises ``TimeoutError`` here. A call is also cancelled when its caller goes away (Ctrl-C, a
cancelled task, a closed connection).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from runhouse.exceptions import ConfigError
from runhouse.protocol.serialization import SERIALIZATIONS
from runhouse.protocol.wire import CallOptions

if TYPE_CHECKING:
    from runhouse.resources.cluster import Cluster


@dataclass(frozen=True)
class Options:
    run_async: bool | None = None  # None: async exactly when the remote function is async
    stream_logs: bool = True
    run_name: str | None = None
    remote: bool = False
    serialization: str = "pickle"
    timeout: float | None = None  # seconds on the cluster; then it cancels the call (TimeoutError)

    def wire(self) -> CallOptions:
        return CallOptions(
            self.serialization, self.run_name, self.stream_logs, self.remote, timeout=self.timeout
        )


CALL_OPTIONS = tuple(f.name for f in fields(Options))


def make_options(base: Options, given: dict[str, Any]) -> Options:
    unknown = sorted(set(given) - set(CALL_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown call option(s) {', '.join(unknown)}; valid options: {', '.join(CALL_OPTIONS)}"
        )
    if "serialization" in given and given["serialization"] not in SERIALIZATIONS:
        raise ConfigError(f"serialization must be one of {', '.join(SERIALIZATIONS)}")
    timeout = given.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigError(f"timeout must be a number of seconds above 0, or None (got {timeout!r})")
    return replace(base, **given)


def split_options(kwargs: dict[str, Any], signature: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Take call options out of ``kwargs``, except names the user's function declares itself."""
    if not kwargs:
        return kwargs, {}
    declared = set(signature.get("params", ()))
    options = {k: kwargs[k] for k in CALL_OPTIONS if k in kwargs and k not in declared}
    if options:
        kwargs = {k: v for k, v in kwargs.items() if k not in options}
    return kwargs, options


class RemoteResult:
    """A result kept on the cluster by ``.remote(...)``; ``fetch()`` brings it here."""

    def __init__(self, cluster: Cluster, key: str) -> None:
        self.cluster = cluster
        self.key = key

    def fetch(self) -> Any:
        return self.cluster.get(self.key)

    def delete(self) -> None:
        self.cluster.delete(self.key)

    def __repr__(self) -> str:
        return f"<RemoteResult {self.key!r} on {self.cluster.name!r}>"


class RemoteCallable:
    """Calls ``method`` of the object ``key`` on ``cluster``; functions use method ``call``."""

    def __init__(
        self,
        cluster: Cluster,
        key: str,
        method: str,
        signature: dict[str, Any],
        options: Options | None = None,
    ) -> None:
        self._cluster = cluster
        self._key = key
        self._method = method
        self._signature = signature
        self._options = options or Options()

    def options(self, **given: Any) -> RemoteCallable:
        """A copy that calls with these options: ``fn.options(stream_logs=False)(x)``."""
        return RemoteCallable(
            self._cluster, self._key, self._method, self._signature, make_options(self._options, given)
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs, given = split_options(kwargs, self._signature)
        options = make_options(self._options, given) if given else self._options
        return self.invoke(args, kwargs, options)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the call and keep its result on the cluster; returns a :class:`RemoteResult`."""
        kwargs, given = split_options(kwargs, self._signature)
        options = make_options(self._options, {**given, "remote": True})
        return self.invoke(args, kwargs, options)

    def invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: Options) -> Any:
        client = self._cluster.client
        is_async = self._signature.get("async", False) if options.run_async is None else options.run_async
        if options.remote:
            options = replace(options, run_name=options.run_name or f"{self._key}_{uuid.uuid4().hex[:12]}")
            if is_async:
                return self._remote_async(args, kwargs, options)
            client.call(self._key, self._method, args, kwargs, options.wire())
            return RemoteResult(self._cluster, options.run_name or "")
        if self._signature.get("generator"):
            if is_async:
                return client.astream(self._key, self._method, args, kwargs, options.wire())
            return client.stream(self._key, self._method, args, kwargs, options.wire())
        if is_async:
            return client.acall(self._key, self._method, args, kwargs, options.wire())
        return client.call(self._key, self._method, args, kwargs, options.wire())

    async def _remote_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: Options
    ) -> RemoteResult:
        await self._cluster.client.acall(self._key, self._method, args, kwargs, options.wire())
        return RemoteResult(self._cluster, options.run_name or "")

    def __repr__(self) -> str:
        return f"<remote {self._key}.{self._method} on {self._cluster.name!r}>"
