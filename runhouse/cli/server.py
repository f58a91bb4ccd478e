"""``runhouse start | stop | restart | status``: the daemon on this machine."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runhouse.compute import local
from runhouse.exceptions import RunhouseError
from runhouse.settings import Settings, load_settings

console = Console()
err = Console(stderr=True)

PortOption = typer.Option(None, "--port", "-p", help="Port of the daemon (default: settings, 32300).")
HostOption = typer.Option(
    None, "--host", help="Address to bind (default 127.0.0.1; other values expose the daemon)."
)


def _port(port: int | None) -> int:
    return port or load_settings().port


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _running(settings: Settings, port: int) -> int | None:
    """The pid of our daemon on ``port`` if it answers where it was started (HTTPS if with --tls)."""
    pid = local.daemon_pid(settings, port)
    if pid is None:
        return None
    was = local.start_options(settings, port)
    if local.ping(str(was.get("host") or "127.0.0.1"), port, tls=bool(was.get("tls"))) is None:
        return None
    return pid


def _read_status(settings: Settings, port: int) -> dict[str, Any]:
    """The daemon's ``/status`` (raises :class:`RunhouseError` when it cannot be read)."""
    from runhouse.client.daemon_client import DaemonClient  # here: `runhouse start` does not need it
    from runhouse.client.transport import Endpoint

    tls = bool(local.start_options(settings, port).get("tls"))
    endpoint = Endpoint("127.0.0.1", port, "https", verify=False) if tls else Endpoint("127.0.0.1", port)
    return DaemonClient(endpoint, local.read_token(settings, port)).status()


def start(
    port: int | None = PortOption,
    host: str | None = HostOption,
    tls: bool = typer.Option(
        False, "--tls", help="Serve HTTPS with a self-signed certificate made for this host."
    ),
    autostop_mins: float | None = typer.Option(
        None, "--autostop-mins", help="Stop the daemon after this many minutes without activity."
    ),
    den_auth: bool = typer.Option(
        False,
        "--den-auth",
        help="Also accept callers' Den tokens, checked with Den (needs den.json in the daemon folder; "
        "rh.cluster(den_auth=True) writes it).",
    ),
) -> None:
    """Start the daemon in the background (no-op if it is already running)."""
    settings = load_settings()
    port = _port(port)
    bind = host or settings.host
    running = _running(settings, port)
    if running is not None:
        was = str(local.start_options(settings, port).get("host") or bind)
        console.print(
            f"The daemon was already running on {was}:{port} (pid {running}); left as it is. "
            "`runhouse restart` starts a fresh one."
        )
        return
    began = time.perf_counter()
    try:
        with console.status(f"Starting the runhouse daemon on {bind}:{port}..."):
            pid = local.start_daemon(
                settings, bind, port, tls=tls, autostop_mins=autostop_mins, den_auth=den_auth
            )
    except RunhouseError as e:
        err.print(f"[red]Could not start the daemon:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    console.print(
        f"Daemon running on {bind}:{port} (pid {pid}, ready in {time.perf_counter() - began:.2f}s). "
        f"Token: {local.token_path(settings, port)}"
    )


def stop(port: int | None = PortOption) -> None:
    """Stop the daemon and its workers."""
    settings = load_settings()
    port = _port(port)
    if local.stop_daemon(settings, port):
        console.print(f"Stopped the daemon on port {port}.")
    else:
        console.print(f"No daemon of ours is running on port {port}.")


def restart(port: int | None = PortOption, host: str | None = HostOption) -> None:
    """Stop the daemon (its objects are lost) and start a fresh one, with the options it had."""
    settings = load_settings()
    before = local.start_options(settings, _port(port))
    _warn_objects_lost(settings, _port(port))
    stop(port)
    autostop = before.get("autostop_mins")
    start(
        port,
        host or (str(before["host"]) if before.get("host") else None),
        tls=bool(before.get("tls")),
        autostop_mins=float(autostop) if isinstance(autostop, (int, float)) else None,
        den_auth=bool(before.get("den_auth")),
    )


def _warn_objects_lost(settings: Settings, port: int) -> None:
    if _running(settings, port) is None:
        return
    try:
        objects = sorted(
            {key for w in _read_status(settings, port)["workers"] for key in w.get("objects", [])}
        )
    except RunhouseError:
        objects = []
    which = f" ({escape(', '.join(objects))})" if objects else ""
    err.print(
        f"[yellow]Warning:[/yellow] restarting the daemon on port {port} stops its workers: the objects on "
        f"it{which} are lost; send them again after the restart (e.g. `fn.to(cluster)`)."
    )


def _mb(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """A multi-node cluster's nodes: address, resources, GPUs (nvidia-smi where present), workers."""
    table = Table(title="Nodes")
    for column in ("address", "state", "CPUs", "memory GB", "GPUs", "workers (env: pid)"):
        table.add_column(column)
    for n in nodes:
        state = ("head, " if n.get("is_head") else "") + ("alive" if n.get("alive") else "dead")
        smi = n.get("nvidia_smi")
        gpus = f"{n.get('gpus', 0):g}"
        if smi:
            gpus += (
                " ("
                + ", ".join(
                    f"{g['name']} {_mb(g['memory_used_mb'])}/{_mb(g['memory_total_mb'])} MB" for g in smi
                )
                + ")"
            )
        workers = ", ".join(f"{w['env']}: {w['pid']}" for w in n.get("workers", [])) or "-"
        table.add_row(
            str(n.get("address")),
            state,
            f"{n.get('cpus', 0):g}",
            f"{(n.get('memory') or 0) / 1e9:.1f}",
            gpus,
            workers,
        )
    return table


def _status_table(info: dict[str, Any]) -> Table:
    table = Table(title="Workers")
    for column in ("env", "pid", "node", "CPU %", "RSS MB", "objects", "running calls"):
        table.add_column(column)
    for w in info["workers"]:
        running = (
            ", ".join(f"{r['key']}.{r['method']} ({r['seconds']}s)" for r in w.get("running", [])) or "-"
        )
        table.add_row(
            w["name"],
            str(w.get("pid")),
            w.get("node") or "this machine",
            str(w.get("cpu_percent", "-")),
            str(w.get("rss_mb", "-")),
            ", ".join(w.get("objects", [])) or "-",
            running,
        )
    return table


def status(port: int | None = PortOption) -> None:
    """Show the daemon's version, pid, port, workers (and the node each runs on), their objects and
    running calls, and on a multi-node cluster each node: address, CPUs, memory, GPUs, workers."""
    settings = load_settings()
    port = _port(port)
    tls = bool(local.start_options(settings, port).get("tls"))
    if local.ping("127.0.0.1", port, tls=tls) is None:
        console.print(f"No daemon is answering on port {port}. Start one with `runhouse start`.")
        raise typer.Exit(1)
    try:
        info = _read_status(settings, port)
    except RunhouseError as e:
        err.print(f"[red]Could not read the daemon's status:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    served = _plural(info["calls_served"], "call")
    console.print(
        f"runhouse {info['rh_version']} daemon: pid {info['pid']}, port {info['port']}, "
        f"up {info['uptime_s']}s, {served} served, RSS {info['daemon_rss_mb']} MB"
    )
    console.print(_status_table(info))
    if info.get("nodes"):
        console.print(_nodes_table(info["nodes"]))


def register(app: typer.Typer) -> None:
    for command in (start, stop, restart, status):
        app.command()(command)
