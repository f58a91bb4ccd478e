"""Running the daemon process: token and pid files, the HTTP server, clean shutdown.

``python -m runhouse.server --port P`` runs it in the foreground; ``runhouse start`` (see
:mod:`runhouse.compute.local`) runs that command detached and waits for ``/check``.
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
from importlib import import_module
from pathlib import Path

import uvicorn

from runhouse.server.app import FIXED_PATHS, create_app
from runhouse.server.denauth import IDENTITY_FILE, DenAuth, DenIdentity
from runhouse.server.fastpath import FastCalls, make_protocol
from runhouse.server.http import Limits, with_limits
from runhouse.server.loop import has_uvloop
from runhouse.settings import Settings, private_dir


def write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read (tokens, pid files)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def limits_for(settings: Settings) -> Limits:
    """The HTTP limits every connection meets before authentication (see :mod:`runhouse.server.http`)."""
    return Limits(
        max_body=settings.max_body_mb << 20,
        max_header=settings.max_header_kb << 10,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
    )


def _allow_open_files(connections: int) -> None:
    """Raise the open-file limit so that the connection cap, not EMFILE, is what new clients meet
    (a refused accept would shut out ``GET /check`` too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 4096  # workers' channels (one socket each), logs, the listening socket
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_daemon(
    settings: Settings,
    host: str,
    port: int,
    tls: bool = False,
    autostop_mins: float | None = None,
    den_auth: bool = False,
) -> None:
    """Serve until stopped (SIGTERM) or, with ``autostop_mins``, until idle that long.

    With ``den_auth``, callers may present Den tokens (checked with Den, see
    :mod:`runhouse.server.denauth`); the Den identity comes from ``den.json`` in the daemon folder."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = settings.make_daemon_dir(port)
    token_file = folder / "token"
    token = token_file.read_text().strip() if token_file.exists() else ""
    if not token:
        token = secrets.token_urlsafe(32)
        write_private(token_file, token)
    write_private(folder / "pid", str(os.getpid()))
    settings = settings.with_(host=host, port=port)
    identity = DenIdentity.load(folder)
    if den_auth and identity is None:
        raise SystemExit(
            f"--den-auth needs {folder / IDENTITY_FILE}; start the cluster with rh.cluster(den_auth=True)"
        )
    den = (
        DenAuth(identity, ttl_s=settings.den_auth_ttl_s, heartbeat_s=settings.den_heartbeat_s)
        if identity is not None
        else None
    )
    _allow_open_files(settings.max_connections)
    app = create_app(settings, port, token, autostop_mins=autostop_mins, den=den, den_auth=den_auth)
    tls_files: tuple[Path | None, Path | None] = (None, None)
    if tls:  # imported here: cryptography costs ~8 MB and 50 ms that plain-HTTP daemons do not need
        tls_files = import_module("runhouse.server.tls").ensure_certificate(folder)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop" if has_uvloop() else "asyncio",
        http=with_limits(make_protocol(FastCalls(app.daemon_state, app, FIXED_PATHS)), limits_for(settings)),
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        timeout_keep_alive=120,
        ssl_certfile=str(tls_files[0]) if tls_files[0] else None,
        ssl_keyfile=str(tls_files[1]) if tls_files[1] else None,
    )
    server = uvicorn.Server(config)
    app.daemon_state.on_idle = lambda: setattr(server, "should_exit", True)
    try:
        server.run()
    finally:
        pid_file = folder / "pid"
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
