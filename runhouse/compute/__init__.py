"""Bringing clusters up and down. ``local``: a daemon on this machine."""
