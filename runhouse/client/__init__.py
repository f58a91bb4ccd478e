"""Talking to a daemon over HTTP: transports, the call codec and a typed client."""

from runhouse.client.daemon_client import DaemonClient

__all__ = ["DaemonClient"]
