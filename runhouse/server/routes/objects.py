"""Object routes: put/get (``/object``), ``/keys``, ``/rename``, ``/delete_object`` and deploy
(``/resource``). Each forwards to the worker that holds (or will hold) the key."""

from __future__ import annotations

import functools
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runhouse.exceptions import BadRequest
from runhouse.protocol.errors import WireError
from runhouse.protocol.messages import Delete, Deploy, Error, FinalReply, Get, Ok, Put, Rename
from runhouse.protocol.serialization import check_serialization, loads_json
from runhouse.server.registry import Entry
from runhouse.server.routes._body import decode_base64, frame_or_json, json_body, key_field
from runhouse.server.routes.envs import check_env_config
from runhouse.server.routes.original import deploy_original
from runhouse.server.routes.relay import relay
from runhouse.server.state import DaemonState, check_env_name
from runhouse.server.workers import DEFAULT_ENV


def _state(request: Request) -> DaemonState:
    return request.app.state.rh


async def _replace_elsewhere(state: DaemonState, key: str, env: str) -> None:
    """A key lives in one worker: drop an older copy held by a different env."""
    old = state.registry.find(key)
    if old is not None and old.env != env and old.env in state.workers:
        await state.workers[old.env].request(lambda cid: Delete(cid, [key]))


async def put_object(request: Request) -> Response:
    state = _state(request)
    fields, payload, frames = await frame_or_json(request, ("key",))
    key = key_field(fields)
    env = check_env_name(fields.get("env") or fields.get("env_name") or DEFAULT_ENV)
    ser = check_serialization(fields.get("serialization") or ("pickle" if frames else "json"))
    if ser == "none":
        ser = "json"  # a JSON body's value is stored as that value
    if not frames:
        payload = _put_payload(fields, ser)
    worker = await state.worker(env)
    await _replace_elsewhere(state, key, env)
    reply, _ = await worker.request(lambda cid: Put(cid, key, ser), payload)
    if isinstance(reply, Error):
        raise BadRequest(f"could not store {key!r}: {reply.info['message']}", 400)
    state.registry.add(key, Entry(env=env, kind="object"))
    return JSONResponse({"key": key, "env": env, "output_type": "success"})


def _put_payload(fields: dict[str, Any], ser: str) -> bytes:
    """The value of a JSON put: ``data`` (our field: a JSON value, or base64 for a pickle) or
    ``serialized_data`` (the original's field: JSON text for json, base64 for a pickle)."""
    original = "serialized_data" in fields and "data" not in fields
    data = fields.get("serialized_data") if original else fields.get("data")
    if ser == "pickle":
        if not isinstance(data, str):
            raise BadRequest("with serialization 'pickle', data must be a base64 string of the pickle", 400)
        return decode_base64(data)
    if original and fields.get("serialization") == "json":
        if not isinstance(data, str):
            raise BadRequest("with serialization 'json', serialized_data must be JSON text", 400)
        try:
            loads_json(data.encode(), "serialized_data")
        except WireError as e:
            raise BadRequest(str(e), 400) from None
        return data.encode()
    return _json_bytes(data)


def _json_bytes(data: Any) -> bytes:
    try:
        return json.dumps(data).encode()
    except (ValueError, RecursionError):
        raise BadRequest("'data' is nested too deeply or holds numbers too large to store", 400) from None


async def get_object(request: Request) -> Response:
    state = _state(request)
    key = key_field(dict(request.query_params))
    ser = check_serialization(request.query_params.get("serialization", "json"))
    entry = state.registry.get(key)
    worker = await state.worker(entry.env)
    cid, pending = worker.submit(lambda cid: Get(cid, key, ser))
    fmt = "frames" if ser == "pickle" else "json"
    return await relay(state, worker, cid, pending, fmt, None)


async def keys(request: Request) -> Response:
    """Keys held on the cluster (of one env with ``?env=`` or the original's ``?env_name=``), in
    our field ``keys`` and in the original's envelope (``data``, not serialized)."""
    env = request.query_params.get("env") or request.query_params.get("env_name")
    names = _state(request).registry.keys(env)
    return JSONResponse(
        {"keys": names, "data": names, "output_type": "result_serialized", "serialization": None}
    )


async def rename(request: Request) -> Response:
    state = _state(request)
    body = await json_body(request, ("key", "new_key"))
    old, new = key_field(body), key_field(body, "new_key")
    entry = state.registry.get(old)
    if state.registry.find(new) is not None:
        raise BadRequest(f"{new!r} already exists; delete it first or pick another name", 409)
    reply, _ = await state.workers[entry.env].request(lambda cid: Rename(cid, old, new))
    if isinstance(reply, Error):
        raise BadRequest(reply.info["message"], 400)
    state.registry.rename(old, new)
    return JSONResponse({"key": new, "output_type": "success"})


async def delete_object(request: Request) -> Response:
    """Delete keys; a name that is an env stops that env's worker (freeing its memory). A name that
    is not there is reported in ``missing`` and is not an error (deleting is idempotent, as in the
    original system)."""
    state = _state(request)
    body = await json_body(request, ("keys",))
    names = body["keys"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("'keys' must be a list of names", 400)
    deleted, envs_killed, missing = [], [], []
    by_env: dict[str, list[str]] = {}
    for name in names:
        entry = state.registry.find(name)
        if entry is not None:
            by_env.setdefault(entry.env, []).append(name)
        elif name == DEFAULT_ENV:
            raise BadRequest(
                f"{DEFAULT_ENV!r} is the cluster's default env and cannot be deleted; "
                "restart the cluster to reset it",
                400,
            )
        elif name in state.workers or name in state.env_configs:
            envs_killed.append(name)
        else:
            missing.append(name)
    for env, env_keys in by_env.items():
        worker = state.workers.get(env)
        if worker is not None and worker.alive:
            await worker.request(functools.partial(Delete, keys=env_keys))
        for key in env_keys:
            state.registry.remove(key)
        deleted += env_keys
    for env in envs_killed:
        await state.kill_env(env)
    return JSONResponse(
        {
            "deleted": deleted,
            "envs_stopped": envs_killed,
            "missing": missing,
            "data": deleted + envs_killed,
            "output_type": "result_serialized",
            "serialization": None,
        }
    )


async def deploy(request: Request) -> Response:
    """Place a function, class or new instance in an env's worker under ``key``."""
    state = _state(request)
    fields, payload, frames = await frame_or_json(request)
    if not frames and "serialized_data" in fields and "spec" not in fields:
        return await deploy_original(state, fields)
    missing = [k for k in ("key", "spec") if k not in fields]
    if missing:
        raise BadRequest(f"body is missing {', '.join(repr(m) for m in missing)}", 400)
    key = key_field(fields)
    env_config = fields.get("env_config")
    if env_config is not None and not isinstance(env_config, dict):
        raise BadRequest("'env_config' must be an env's config (a JSON object) or null", 400)
    config = fields.get("config")
    if config is not None and not isinstance(config, dict):
        raise BadRequest("'config' must be the resource's config (a JSON object) or null", 400)
    env = check_env_name(fields.get("env") or (env_config or {}).get("name") or DEFAULT_ENV)
    spec = fields["spec"]
    if not isinstance(spec, dict) or not (
        spec.get("by_value") or spec.get("module") or spec.get("kind") == "instance"
    ):
        raise BadRequest("'spec' must name a module and qualname, be by_value, or be an instance spec", 400)
    if spec.get("by_value") and not frames:
        raise BadRequest("deploying by value needs a frames body holding the pickle", 400)
    ser = check_serialization(fields.get("serialization", "pickle"))
    for name in ("module", "qualname", "class_key", "root"):
        if not isinstance(spec.get(name) or "", str):
            raise BadRequest(f"'spec.{name}' must be a string", 400)
    if spec.get("kind") == "instance":
        class_entry = state.registry.find(spec.get("class_key", ""))
        if class_entry is None or class_entry.env != env:
            spec = dict(spec, class_key="")  # import the class in this env instead
    worker = await state.ensure_env(check_env_config(dict(env_config or {"ref": True}, name=env)))
    await _replace_elsewhere(state, key, env)
    state.touch()
    entry = Entry(env=env, kind=str(fields.get("kind", "object")), config=config or {})

    def register(reply: FinalReply) -> None:
        if isinstance(reply, Ok):
            state.registry.add(key, entry)

    cid, pending = worker.submit(lambda cid: Deploy(cid, key, spec, ser), payload)
    return await relay(state, worker, cid, pending, "frames" if frames else "json", None, register)


async def get_resource(request: Request) -> Response:
    """The config a client sent when it deployed ``key`` (to build a stub for it by name)."""
    state = _state(request)
    key = key_field(dict(request.query_params))
    entry = state.registry.get(key)
    return JSONResponse({"key": key, "env": entry.env, "kind": entry.kind, "config": entry.config})
