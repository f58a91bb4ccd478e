"""Wire formats shared by the client, the daemon and the workers.

This package imports nothing else of runhouse, so every side can depend on it. See
:mod:`runhouse.protocol.wire` for the HTTP formats and :mod:`runhouse.protocol.ipc` for the
daemon-worker channel.
"""

from runhouse.protocol.errors import WireError
from runhouse.protocol.serialization import SERIALIZATIONS, deserialize, serialize
from runhouse.protocol.wire import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "SERIALIZATIONS", "WireError", "deserialize", "serialize"]
