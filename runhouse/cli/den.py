"""``runhouse den ...``: run Den, the self-hosted registry, and administer its users and tokens.

``start``/``stop`` manage the service; ``user``, ``token`` and ``usage`` work directly on Den's
database (run them where Den runs; they need no token and bring the schema up to date first).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runhouse.den import service
from runhouse.den.limits import MAX_TOKEN_LIFETIME_S
from runhouse.exceptions import RunhouseError
from runhouse.settings import load_settings

if TYPE_CHECKING:
    from runhouse.den.db import Database

T = TypeVar("T")

console = Console()
err = Console(stderr=True)

den_app = typer.Typer(
    name="den",
    help="Den, the self-hosted registry: users, tokens, shared resources, secrets and usage. "
    "Start it with `runhouse den start`, then add users with `runhouse den user add NAME`.",
    no_args_is_help=True,
)
user_app = typer.Typer(help="Users of this Den (works on its database directly).", no_args_is_help=True)
token_app = typer.Typer(help="Users' tokens (works on Den's database directly).", no_args_is_help=True)
den_app.add_typer(user_app, name="user")
den_app.add_typer(token_app, name="token")

DbOption = typer.Option(
    None,
    "--db",
    help="Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB "
    "(default: sqlite:///<data dir>/den.sqlite).",
)
DataDirOption = typer.Option(
    None, "--data-dir", help="Den's folder for its pid file, log and key file (default: $RH_HOME/den)."
)


def _data_dir(data_dir: Path | None) -> Path:
    return (data_dir or service.default_data_dir(load_settings())).expanduser().resolve()


def _db_url(db: str | None, data_dir: Path | None) -> str:
    return db or service.default_db_url(_data_dir(data_dir))


def _fail(what: str, error: Exception) -> typer.Exit:
    err.print(f"[red]{what}:[/red] {escape(str(error))}")  # messages hold [brackets]: `runhouse[den]`
    return typer.Exit(1)


def _need_server_stack(db: str | None, data_dir: Path | None) -> None:
    """Stop with the install hint when Den's server libraries (the `den` extra) are missing."""
    try:
        service.require_server_stack(_db_url(db, data_dir))
    except RunhouseError as e:
        raise _fail("Cannot run Den here", e) from None


def _on_database(db: str | None, data_dir: Path | None, what: str, work: Callable[[Database], T]) -> T:
    # Loaded here, not at the top: every `runhouse` command imports this module, and only these
    # commands need SQLAlchemy and Alembic.
    from runhouse.den import admin

    try:
        database = admin.open_database(_db_url(db, data_dir))
    except RunhouseError as e:
        raise _fail(f"Could not open Den's database ({what})", e) from None
    try:
        return work(database)
    except RunhouseError as e:
        raise _fail(f"Could not {what}", e) from None
    finally:
        database.dispose()


@den_app.command()
def start(
    host: str = typer.Option(
        service.DEFAULT_HOST, "--host", help="Address to bind (other than loopback exposes Den)."
    ),
    port: int = typer.Option(service.DEFAULT_PORT, "--port", "-p", help="Port to serve on."),
    db: str | None = DbOption,
    data_dir: Path | None = DataDirOption,
    foreground: bool = typer.Option(
        False, "--foreground", help="Serve in this process instead of starting Den in the background."
    ),
    secret_key: str | None = typer.Option(
        None,
        "--secret-key",
        envvar="RH_DEN_SECRET_KEY",
        show_default=False,
        help="Fernet key that encrypts secrets at rest (default: <data dir>/secret.key, made on first start).",
    ),
) -> None:
    """Migrate the database to the latest schema and serve Den (in the background by default)."""
    _need_server_stack(db, data_dir)
    options = service.DenOptions(_data_dir(data_dir), _db_url(db, data_dir), host, port)
    if foreground:
        service.serve(options, secret_key)
        return
    try:
        with console.status(f"Starting Den on {options.url}..."):
            pid, url, started = service.start_detached(
                options, {"RH_DEN_SECRET_KEY": secret_key} if secret_key else None
            )
    except RunhouseError as e:
        raise _fail("Could not start Den", e) from None
    if started:
        console.print(f"Den running (pid {pid}, data in {options.data_dir}, log {options.log_file}).")
    else:
        console.print(f"Den is already running for {options.data_dir} (pid {pid}).")
    console.print(url, soft_wrap=True)


@den_app.command()
def stop(data_dir: Path | None = DataDirOption) -> None:
    """Stop the Den serving this data dir (by its pid file)."""
    folder = _data_dir(data_dir)
    pid = service.stop(folder)
    if pid is None:
        console.print(f"No Den of ours is running for {folder}.")
    else:
        console.print(f"Stopped Den (pid {pid}).")


def _print_minted(token_id: str, token: str, note: str) -> None:
    console.print(f"{note} Token id {token_id}; the token is shown only once:")
    print(token)  # plain, last line: scripts read it with `| tail -n 1`


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="Username: letters, digits and _ . @ + - (up to 128)."),
    db: str | None = DbOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Create a user and print their first token (as the last line of output)."""
    _need_server_stack(db, data_dir)
    from runhouse.den import admin

    minted = _on_database(db, data_dir, f"add user {name!r}", lambda d: admin.add_user(d, name))
    _print_minted(minted.token_id, minted.token, f"Created user {name}.")


@user_app.command("list")
def user_list(db: str | None = DbOption, data_dir: Path | None = DataDirOption) -> None:
    """List the users of this Den."""
    _need_server_stack(db, data_dir)
    from runhouse.den import admin

    for username in _on_database(db, data_dir, "list users", admin.list_users):
        print(username)


def _lifetime(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_TOKEN_LIFETIME_S:
        raise typer.BadParameter(
            f"{value} is out of range: give 1 to {MAX_TOKEN_LIFETIME_S} seconds (366 days), "
            "or leave --expires-in out for a token that does not expire"
        )
    return value


@token_app.command("add")
def token_add(
    name: str = typer.Argument(..., help="The existing user to mint a token for."),
    token_name: str | None = typer.Option(None, "--name", help="A label to tell tokens apart."),
    expires_in: int | None = typer.Option(
        None,
        "--expires-in",
        callback=_lifetime,
        help=f"Lifetime in seconds, 1 to {MAX_TOKEN_LIFETIME_S} (366 days) (default: no expiry).",
    ),
    db: str | None = DbOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Mint another token for an existing user (printed as the last line of output)."""
    _need_server_stack(db, data_dir)
    from runhouse.den import admin

    minted = _on_database(
        db, data_dir, f"mint a token for {name!r}", lambda d: admin.add_token(d, name, token_name, expires_in)
    )
    _print_minted(minted.token_id, minted.token, f"Minted a token for {name}.")


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@token_app.command("list")
def token_list(
    name: str = typer.Argument(..., help="The user whose tokens to list."),
    db: str | None = DbOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """List a user's tokens (ids, scopes, expiry, revoked; never the secrets)."""
    _need_server_stack(db, data_dir)
    from runhouse.den import admin

    rows = _on_database(db, data_dir, f"list tokens of {name!r}", lambda d: admin.list_tokens(d, name))
    table = Table(title=f"Tokens of {name} (times in UTC)")
    table.add_column("id", no_wrap=True, min_width=16)  # whole, for `runhouse den token revoke ID`
    for column in ("name", "scope", "created", "expires", "revoked"):
        table.add_column(column, overflow="fold")
    for t in rows:
        table.add_row(
            t.id,
            t.name or "-",
            t.scope,
            _when(t.created_at),
            _when(t.expires_at),
            "yes" if t.revoked else "no",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The token's id (from `runhouse den token list USER`)."),
    db: str | None = DbOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Revoke a token: Den refuses it from now on."""
    _need_server_stack(db, data_dir)
    from runhouse.den import admin

    owner = _on_database(
        db, data_dir, f"revoke token {token_id!r}", lambda d: admin.revoke_token(d, token_id)
    )
    console.print(f"Revoked token {token_id} of {owner}.")


@den_app.command()
def usage(
    db: str | None = DbOption,
    data_dir: Path | None = DataDirOption,
    cluster: str | None = typer.Option(None, "--cluster", help="Only this cluster, as /owner/name."),
    since: str | None = typer.Option(
        None, "--since", help="Only events since: unix seconds, an ISO time, or a duration such as 2h or 7d."
    ),
) -> None:
    """Who used which cluster, when (first and last event) and how much (summed counts per kind)."""
    _need_server_stack(db, data_dir)
    from runhouse.den import admin
    from runhouse.den.names import parse_uri, uri
    from runhouse.den.usage import parse_since

    try:
        cluster_uri = uri(*parse_uri(cluster)) if cluster else None
        since_at = parse_since(since) if since else None
    except RunhouseError as e:
        raise _fail("Bad option", e) from None
    rows = _on_database(db, data_dir, "read usage", lambda d: admin.usage_report(d, cluster_uri, since_at))
    if not rows:
        console.print("No usage recorded" + (f" for {cluster_uri}" if cluster_uri else "") + ".")
        return
    table = Table(title="Den usage (times in UTC)")
    for column in ("cluster", "user", "kind", "resource", "count", "first", "last"):
        table.add_column(column, justify="right" if column == "count" else "left", overflow="fold")
    for r in rows:
        table.add_row(
            r.cluster, r.username, r.kind, r.resource or "-", str(r.count), _when(r.first), _when(r.last)
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(den_app, name="den")
