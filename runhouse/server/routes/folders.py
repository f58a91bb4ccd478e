"""Folder sync routes: ``POST /folder/sync`` (what differs) and ``POST /folder/upload`` (a tar)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runhouse.exceptions import BadRequest
from runhouse.server.folders import FolderStore, check_manifest
from runhouse.server.routes._body import frame_or_json, json_body
from runhouse.server.state import DaemonState


def _store(request: Request) -> FolderStore:
    state: DaemonState = request.app.state.rh
    return FolderStore(state.settings.daemon_dir(state.port) / "code")


async def sync_plan(request: Request) -> Response:
    body = await json_body(request, ("name", "manifest"))
    return JSONResponse(_store(request).plan(body["name"], check_manifest(body["manifest"])))


async def upload(request: Request) -> Response:
    fields, payload, frames = await frame_or_json(request, ("name", "manifest"))
    if not frames:
        raise BadRequest(
            "upload a folder as a frames body: header {name, manifest}, payload a tar archive", 400
        )
    result = _store(request).apply(fields["name"], check_manifest(fields["manifest"]), bytes(payload))
    return JSONResponse(result)
