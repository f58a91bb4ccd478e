"""Baseline HTTP apps that do the same JSON work as a runhouse raw-HTTP call, without a worker hop.

Both accept ``POST /{key}/call`` with ``{"data": {"args": [...], "kwargs": {...}},
"serialization": "none"}`` and answer with the bare JSON result, exactly like the daemon.
"""
