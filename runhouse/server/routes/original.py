"""``POST /resource`` with the original system's body: ``{"serialized_data", "serialization",
"env_name"}``, where the data is ``[config, state, dryrun]`` (a resource's config as the original
client wrote it).

The config names the resource and, for a function, where its code is
(``fn_pointers: [root, module, name]``): such a function is imported in the env's worker and
served under its name like any deployed function. Any other resource is kept as its config, an
object under its name (``GET /object``, ``GET /resource`` read it back). With ``serialization:
"pickle"`` the daemon still unpickles nothing: the env's worker does, under a temporary key, and
hands it back as JSON.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from starlette.responses import JSONResponse, Response

from runhouse.exceptions import BadRequest
from runhouse.protocol.errors import WireError
from runhouse.protocol.messages import Delete, Deploy, Error, Get, Put, Result
from runhouse.protocol.serialization import check_serialization, loads_json
from runhouse.server.registry import Entry, check_key
from runhouse.server.routes._body import decode_base64
from runhouse.server.state import DaemonState, check_env_name
from runhouse.server.workers import DEFAULT_ENV, WorkerHandle

_TEMP_IDS = itertools.count(1)


async def deploy_original(state: DaemonState, fields: dict[str, Any]) -> Response:
    """Deploy or store the resource an original client's ``POST /resource`` body describes."""
    ser = check_serialization(fields.get("serialization") or "none")
    env = check_env_name(fields.get("env_name") or fields.get("env") or DEFAULT_ENV)
    worker = await state.worker(env)
    data = fields.get("serialized_data")
    if ser == "pickle":
        if not isinstance(data, str):
            raise BadRequest("with serialization 'pickle', serialized_data must be base64 of a pickle", 400)
        config = await _config_from_pickle(worker, decode_base64(data))
    else:
        config = _config_from_json(data)
    key = _short_name(config.get("name"))
    old = state.registry.find(key)
    if old is not None and old.env != env and old.env in state.workers:
        await state.workers[old.env].request(lambda cid: Delete(cid, [key]))
    pointers = config.get("fn_pointers")
    if config.get("resource_type") == "function" and pointers is not None:
        spec = _spec(pointers)
        reply, _ = await worker.request(lambda cid: Deploy(cid, key, spec, "json"))
        kind = "function"
    else:
        reply, _ = await worker.request(lambda cid: Put(cid, key, "json"), json.dumps(config).encode())
        kind = "resource"
    if isinstance(reply, Error):
        raise BadRequest(f"could not deploy {key!r}: {reply.info['message']}", 422)
    state.registry.add(key, Entry(env=env, kind=kind, config=config))
    state.touch()
    return JSONResponse(
        {"data": key, "output_type": "result_serialized", "serialization": None, "key": key, "env": env}
    )


def _config_from_json(data: Any) -> dict[str, Any]:
    if isinstance(data, str):
        try:
            data = loads_json(data.encode(), "serialized_data")
        except WireError as e:
            raise BadRequest(str(e), 400) from None
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        raise BadRequest(
            "serialized_data must be [config, state, dryrun] with the resource's config first", 400
        )
    return data


async def _config_from_pickle(worker: WorkerHandle, payload: bytes) -> dict[str, Any]:
    """The config inside a pickled ``(config, state, dryrun)``: unpickled by the worker under a
    temporary key and read back as JSON, so that the daemon unpickles nothing."""
    temp = f"__rh_original_resource_{next(_TEMP_IDS)}"
    reply, _ = await worker.request(lambda cid: Put(cid, temp, "pickle"), payload)
    if isinstance(reply, Error):
        raise BadRequest(f"serialized_data could not be unpickled: {reply.info['message']}", 400)
    try:
        reply, body = await worker.request(lambda cid: Get(cid, temp, "json"))
    finally:
        await worker.request(lambda cid: Delete(cid, [temp]))
    if not isinstance(reply, Result):
        raise BadRequest("serialized_data must be a pickled (config, state, dryrun) holding JSON values", 400)
    return _config_from_json(bytes(body or b"null").decode())


def _short_name(name: Any) -> str:
    """The key for a resource name: the original's names may be ``~/x`` or ``/owner/x``."""
    if not isinstance(name, str) or not name:
        raise BadRequest("the resource's config needs a 'name' to serve it under", 400)
    return check_key(name.rstrip("/").rsplit("/", 1)[-1], "config.name")


def _spec(pointers: Any) -> dict[str, Any]:
    """Our import spec from the original's ``fn_pointers``: ``[root folder, module, function]``."""
    if not (
        isinstance(pointers, list)
        and len(pointers) == 3
        and all(isinstance(p, str | None) for p in pointers)
        and pointers[1]
        and pointers[2]
    ):
        raise BadRequest("'fn_pointers' must be [root folder, module name, function name]", 400)
    root, module, name = pointers
    return {"module": module, "qualname": name, "root": root or None}
