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
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate")
    parser.add_argument("--autostop-mins", type=float, default=None, help="stop after this many idle minutes")
    parser.add_argument(
        "--den-auth",
        action="store_true",
        help="also accept callers' Den tokens (needs den.json in the daemon folder)",
    )
    args = parser.parse_args(argv)
    run_daemon(
        settings, args.host, args.port, tls=args.tls, autostop_mins=args.autostop_mins, den_auth=args.den_auth
    )


if __name__ == "__main__":
    main()
