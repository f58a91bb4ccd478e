"""Summaries of timing samples: percentiles by nearest rank, in milliseconds."""

from __future__ import annotations

import math
import statistics
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest-rank method."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples_s: list[float]) -> dict[str, Any]:
    """Count, p50/p90/p99/max and mean in ms, and sequential calls/s (samples / total time)."""
    ordered = sorted(samples_s)
    total = sum(ordered)
    return {
        "n": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1e3, 4),
        "p90_ms": round(percentile(ordered, 90) * 1e3, 4),
        "p99_ms": round(percentile(ordered, 99) * 1e3, 4),
        "max_ms": round(ordered[-1] * 1e3, 4),
        "mean_ms": round(total / len(ordered) * 1e3, 4),
        "calls_per_s": round(len(ordered) / total, 1) if total else None,
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values))
