"""``runhouse login | logout | whoami``: this client's Den login."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from runhouse.exceptions import RunhouseError
from runhouse.settings import DEFAULT_DEN_URL, load_settings

console = Console()
err = Console(stderr=True)


def login(
    token: str | None = typer.Option(
        None, "--token", help="Your Den token (prompted for, hidden, when not given and RH_TOKEN is unset)."
    ),
    den_url: str | None = typer.Option(
        None, "--den-url", help=f"Den's address (default: the saved one, else {DEFAULT_DEN_URL})."
    ),
) -> None:
    """Log in to Den: check the token and save it in $RH_HOME/config.yaml (mode 0600)."""
    from runhouse.client import login as login_mod

    token = token or load_settings().token or typer.prompt("Den token", hide_input=True)
    try:
        username = login_mod.login(token=token, den_url=den_url)
    except RunhouseError as e:
        err.print(f"[red]Login failed:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    console.print(f"Logged in to {load_settings().den_url} as {username}.")


def logout() -> None:
    """Forget the saved Den token."""
    from runhouse.client import login as login_mod

    had = login_mod.logout()
    console.print("Logged out." if had else "Not logged in; nothing to forget.")


def whoami() -> None:
    """Show the Den user and URL this client uses."""
    from runhouse.client import login as login_mod

    me = login_mod.whoami()
    if not me:
        console.print("Not logged in (run `runhouse login`).")
        raise typer.Exit(1)
    console.print(f"{me['username']} at {me['den_url']}")


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
