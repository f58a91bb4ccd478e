"""The daemon: an ASGI app that routes calls to worker processes holding named objects."""
