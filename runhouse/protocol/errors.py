"""The one error the protocol layer raises: input that does not follow the wire format."""


class WireError(ValueError):
    """Bytes or fields that do not follow the wire format; the message says what is wrong."""
