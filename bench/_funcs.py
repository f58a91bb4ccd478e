"""Functions the benchmark deploys. They live in a module file so they are sent by import path."""

from typing import Any


def add(a: int, b: int) -> int:
    """The trivial call every server is measured with."""
    return a + b


def identity(x: Any) -> Any:
    """Returns its argument: used for the large-array round trip."""
    return x
