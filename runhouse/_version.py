"""The package version and the wire-protocol version the daemon and client agree on."""

__version__ = "0.1.0"

# Bumped only when the HTTP or IPC format changes incompatibly: a client refuses a daemon whose
# protocol differs, and only warns when the package version differs.
PROTOCOL_VERSION = 1
