"""An rh.Module subclass the tests send to clusters."""

from __future__ import annotations

import runhouse as rh


class Accumulator(rh.Module):
    def __init__(self, start=0):
        super().__init__()
        self.total = start

    def add(self, x):
        self.total += x
        return self.total
