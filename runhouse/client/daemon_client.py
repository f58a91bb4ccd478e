"""A typed client for the daemon's routes: objects, deploys, calls, envs, status, bash.

Calls go through the sans-I/O codec, with ``call``/``stream`` on the sync transport and
``acall``/``astream`` on the async one. Output the remote call prints arrives as ``stdout``
events while the call runs and is written to this process's ``sys.stdout`` as it comes.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from runhouse.client.codec import (
    FRAMES_HEADERS,
    Event,
    ReplyDecoder,
    encode_call,
    encode_request,
    raise_for_error_body,
)
from runhouse.client.transport import AsyncTransport, Endpoint, SyncTransport
from runhouse.exceptions import ConnectionError_, RunhouseError, ServerError
from runhouse.protocol.arena import is_segment, outbox
from runhouse.protocol.serialization import segments_of, serialize_parts
from runhouse.protocol.shm import discard, host_id, shm_dir
from runhouse.protocol.wire import FRAMES_CONTENT_TYPE, PROTOCOL_VERSION, CallOptions


def _echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@functools.lru_cache(maxsize=1024)
def _call_path(key: str, method: str) -> str:
    return f"/{quote(key, safe='')}/{quote(method, safe='')}"


@functools.lru_cache(maxsize=64)
def _with_shm(options: CallOptions) -> CallOptions:
    return replace(options, shm=True)


class DaemonClient:
    def __init__(self, endpoint: Endpoint, token: str | None, timeout: float | None = None) -> None:
        headers = dict(endpoint.headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.endpoint = replace(endpoint, headers=headers)
        self._sync = SyncTransport(self.endpoint, timeout)
        self._async = AsyncTransport(self.endpoint, timeout)
        self._shm_state: Any = ...  # not yet known; see _shm

    # -- plain JSON routes ------------------------------------------------------------------
    def request_json(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        if params:
            path = f"{path}?{urlencode({k: v for k, v in params.items() if v is not None})}"
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        with self._sync.open(method, path, payload, headers) as reply:
            data = reply.read()
            if reply.status >= 400:
                raise_for_error_body(reply.status, data)
        return json.loads(data) if data else None

    def check(self) -> dict[str, Any]:
        info = self.request_json("GET", "/check")
        if info.get("protocol") != PROTOCOL_VERSION:
            raise ConnectionError_(
                f"daemon at {self.endpoint.url} speaks protocol {info.get('protocol')}, this client "
                f"{PROTOCOL_VERSION}: install the same runhouse version on both sides"
            )
        return info

    def status(self) -> dict[str, Any]:
        return self.request_json("GET", "/status")

    def keys(self, env: str | None = None) -> list[str]:
        return self.request_json("GET", "/keys", params={"env": env})["keys"]

    def rename(self, key: str, new_key: str) -> None:
        self.request_json("POST", "/rename", {"key": key, "new_key": new_key})

    def delete(self, keys: list[str]) -> dict[str, Any]:
        return self.request_json("POST", "/delete_object", {"keys": keys})

    def envs(self) -> list[dict[str, Any]]:
        return self.request_json("GET", "/envs")["envs"]

    def resource(self, key: str) -> dict[str, Any]:
        return self.request_json("GET", "/resource", params={"key": key})

    def logs(self, run_name: str) -> dict[str, Any]:
        return self.request_json("POST", "/logs", {"run_name": run_name})

    def run_bash(
        self,
        commands: list[str],
        cwd: str | None = None,
        env_vars: dict[str, str] | None = None,
        stop_on_error: bool = False,
    ) -> list[list[Any]]:
        body = {"commands": commands, "cwd": cwd, "env_vars": env_vars or {}, "stop_on_error": stop_on_error}
        return self.request_json("POST", "/run_bash", body)["results"]

    # -- framed routes ------------------------------------------------------------------------
    def _events(self, method: str, path: str, body: list[Any] | None) -> Iterator[Event]:
        return self._events_with(method, path, body, FRAMES_HEADERS)

    def _events_with(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Iterator[Event]:
        shm = self._shm  # decided before the request: deciding may need a request of its own
        with self._sync.open(method, path, body, headers) as reply:
            if reply.status >= 400:
                raise_for_error_body(reply.status, reply.read())
            if not reply.content_type.startswith(FRAMES_CONTENT_TYPE):
                raise ServerError(f"daemon answered {reply.content_type!r} where frames were expected", 502)
            decoder = ReplyDecoder(shm)
            for chunk in reply.chunks():
                yield from decoder.feed(chunk)
            decoder.finish()

    # -- same-host shared memory -------------------------------------------------------------
    @property
    def _shm(self) -> Path | None:
        """This user's shared-memory folder if the daemon runs on this machine as this user."""
        if self._shm_state is ...:
            folder = shm_dir() if self.endpoint.host in ("127.0.0.1", "localhost", "::1") else None
            try:
                same = folder is not None and self.check().get("host_id") == host_id()
            except RunhouseError:
                same = False
            self._shm_state = folder if same else None
        return self._shm_state

    def _call_body(
        self, args: Any, kwargs: dict[str, Any], options: CallOptions
    ) -> tuple[list[Any], list[str]]:
        """The request body for a call, and the shared-memory segments it created (to clean up)."""
        shm = self._shm if options.serialization == "pickle" else None
        if shm is not None:
            options = _with_shm(options)
        body = encode_call(args, kwargs, options, shm)
        if shm is None or len(body) < 3:
            return body, []
        return body, segments_of(bytes(body[1]) + bytes(body[2]))

    def _discard(self, segments: list[str]) -> None:
        """Remove request segments the worker did not take (it failed before reading them)."""
        folder = self._shm_state
        if segments and isinstance(folder, Path):
            for name in segments:
                if is_segment(name):
                    outbox(folder).settle(name)  # taken: kept for reuse; never taken: removed
                else:
                    discard(folder, name)

    def put(self, key: str, obj: Any, env: str | None = None, serialization: str = "pickle") -> None:
        body = encode_request(
            {"key": key, "env": env, "serialization": serialization}, serialize_parts(obj, serialization)
        )
        with self._sync.open("POST", "/object", body, FRAMES_HEADERS) as reply:
            data = reply.read()
            if reply.status >= 400:
                raise_for_error_body(reply.status, data)

    def get(self, key: str, serialization: str = "pickle") -> Any:
        path = f"/object?{urlencode({'key': key, 'serialization': serialization})}"
        return _final(self._events("GET", path, None))

    def upload_folder(self, name: str, manifest: dict[str, list[int]], archive: bytes) -> dict[str, Any]:
        body = encode_request({"name": name, "manifest": manifest}, archive)
        with self._sync.open("POST", "/folder/upload", body, FRAMES_HEADERS) as reply:
            data = reply.read()
            if reply.status >= 400:
                raise_for_error_body(reply.status, data)
        return json.loads(data)

    def ensure_env(self, config: dict[str, Any]) -> Any:
        """Create or update an env on the cluster, printing the installers' progress as it comes."""
        body = json.dumps(config).encode()
        headers = {"Content-Type": "application/json", "Accept": FRAMES_CONTENT_TYPE}
        return _final(self._events_with("POST", "/create_env", body, headers))

    def deploy(self, fields: dict[str, Any], payload: Any = b"") -> Any:
        return _final(self._events("POST", "/resource", encode_request(fields, payload)))

    def call(self, key: str, method: str, args: Any, kwargs: dict[str, Any], options: CallOptions) -> Any:
        """Run a call; print its output as it arrives; return its result (a list for generators).

        The hot path of every stub call, so written flat rather than on top of ``call_events``.
        """
        shm = self._shm
        body, segments = self._call_body(args, kwargs, options)
        items: list[Any] = []
        result: Any = items
        try:
            with self._sync.open("POST", _call_path(key, method), body, FRAMES_HEADERS) as reply:
                if reply.status >= 400:
                    raise_for_error_body(reply.status, reply.read())
                if not reply.content_type.startswith(FRAMES_CONTENT_TYPE):
                    raise ServerError(
                        f"daemon answered {reply.content_type!r} where frames were expected", 502
                    )
                decoder = ReplyDecoder(shm)
                for chunk in reply.chunks():
                    for event in decoder.feed(chunk):
                        done, value = _consume(event, items)
                        if done:
                            result = value
                decoder.finish()
        finally:
            if segments:
                self._discard(segments)
        return result

    def call_events(
        self, key: str, method: str, args: Any, kwargs: dict[str, Any], options: CallOptions
    ) -> Iterator[Event]:
        body, segments = self._call_body(args, kwargs, options)
        try:
            yield from self._events("POST", _call_path(key, method), body)
        finally:
            self._discard(segments)

    def stream(
        self, key: str, method: str, args: Any, kwargs: dict[str, Any], options: CallOptions
    ) -> Iterator[Any]:
        """Run a generator call; yield its items as they arrive."""
        for event in self.call_events(key, method, args, kwargs, options):
            if event.kind == "stdout":
                _echo(event.value)
            elif event.kind == "item":
                yield event.value

    # -- async calls ------------------------------------------------------------------------------
    async def _aevents(self, method: str, path: str, body: list[Any]) -> AsyncIterator[Event]:
        async with self._async.open(method, path, body, FRAMES_HEADERS) as reply:
            if reply.status >= 400:
                raise_for_error_body(reply.status, await reply.read())
            decoder = ReplyDecoder(self._shm_state if isinstance(self._shm_state, Path) else None)
            async for chunk in reply.chunks():
                for event in decoder.feed(chunk):
                    yield event
            decoder.finish()

    async def acall(
        self, key: str, method: str, args: Any, kwargs: dict[str, Any], options: CallOptions
    ) -> Any:
        items: list[Any] = []
        result: Any = items
        body, segments = self._call_body(args, kwargs, options)
        try:
            async for event in self._aevents("POST", _call_path(key, method), body):
                done, value = _consume(event, items)
                if done:
                    result = value  # the final frame is the last one; let the stream end cleanly
        finally:
            self._discard(segments)
        return result

    async def astream(
        self, key: str, method: str, args: Any, kwargs: dict[str, Any], options: CallOptions
    ) -> AsyncIterator[Any]:
        body, segments = self._call_body(args, kwargs, options)
        try:
            async for event in self._aevents("POST", _call_path(key, method), body):
                if event.kind == "stdout":
                    _echo(event.value)
                elif event.kind == "item":
                    yield event.value
        finally:
            self._discard(segments)

    def close(self) -> None:
        self._sync.close()


def _consume(event: Event, items: list[Any]) -> tuple[bool, Any]:
    if event.kind == "stdout":
        _echo(event.value)
    elif event.kind == "item":
        items.append(event.value)
    elif event.kind == "success":
        return True, items
    else:
        return True, event.value
    return False, None


def _final(events: Iterator[Event]) -> Any:
    items: list[Any] = []
    for event in events:
        done, value = _consume(event, items)
        if done:
            for _ in events:  # read to the end so the connection can be reused
                pass
            return value
    return items
