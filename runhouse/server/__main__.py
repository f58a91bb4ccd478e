"""``python -m runhouse.server [--host H] [--port P]``: run the daemon in the foreground."""

from __future__ import annotations

import argparse

from runhouse.server.daemon import run_daemon
from runhouse.settings import load_settings


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m runhouse.server", description="Run the runhouse daemon.")
    parser.add_argument("--host", default=settings.host, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=settings.port, help="port to bind (default %(default)s)")
    args = parser.parse_args(argv)
    run_daemon(settings, args.host, args.port)


if __name__ == "__main__":
    main()
