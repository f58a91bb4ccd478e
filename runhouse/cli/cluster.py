"""``runhouse cluster list | down NAME``: on-demand clusters as SkyPilot on this machine knows them."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runhouse.exceptions import RunhouseError

console = Console()
err = Console(stderr=True)
group = typer.Typer(help="On-demand clusters (launched through SkyPilot): list them, tear them down.")


@group.command("list")
def list_clusters() -> None:
    """The on-demand clusters SkyPilot on this machine has: name, state, nodes, resources, autostop."""
    try:
        from runhouse.compute.sky import SkyLauncher  # the sky extra, loaded only for this command

        rows = SkyLauncher().names()
    except RunhouseError as e:
        err.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(1) from None
    if not rows:
        console.print("No on-demand clusters.")
        return
    table = Table("name", "status", "nodes", "resources", "autostop (min)")
    for row in rows:
        autostop = "-" if row["autostop_mins"] is None else str(row["autostop_mins"])
        table.add_row(row["name"], row["status"], str(row["nodes"]), escape(str(row["resources"])), autostop)
    console.print(table)


@group.command("down")
def down(
    name: str = typer.Argument(..., help="The cluster's name (as `runhouse cluster list` shows it)."),
) -> None:
    """Stop our daemon on the cluster (if it answers) and terminate its machines through SkyPilot."""
    try:
        from runhouse.resources.ondemand import OnDemandCluster, load_cluster

        try:  # the config up() left in the local store, else one saved under that name
            cluster = load_cluster(name if name.startswith(("~/", "/")) else f"~/{name}")
        except RunhouseError:
            try:
                cluster = load_cluster(name)
            except RunhouseError:  # not saved: SkyPilot's record is enough to terminate it
                cluster = OnDemandCluster(name=name)
        if not isinstance(cluster, OnDemandCluster):
            err.print(
                f"[red]{escape(name)} is not an on-demand cluster; stop its daemon with `runhouse stop`[/red]"
            )
            raise typer.Exit(1)
        cluster.teardown()
    except RunhouseError as e:
        err.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Cluster {escape(name)} is down.")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="cluster")
