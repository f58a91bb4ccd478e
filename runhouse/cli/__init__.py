"""The ``runhouse`` command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from runhouse.cli import cluster, den, login, server

app = typer.Typer(
    name="runhouse",
    help="Run Python functions and classes on your own compute. Start here: `runhouse start`.",
    no_args_is_help=True,
    add_completion=False,
)
server.register(app)
den.register(app)
login.register(app)
cluster.register(app)


def main() -> None:
    app()
