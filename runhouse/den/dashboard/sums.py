"""The usage page's numbers: counts per time bucket, kind and user or cluster, for the clusters the
viewer may see, read from the rollups and remembered once they can no longer change.

Each range is cut into equal buckets (a :class:`Window`). Ranges cut into whole days read
``usage_days``; the others read ``usage_hours`` (both kept by :func:`runhouse.den.usage.record`).
The clusters the viewer may see are worked out once per request
(:func:`runhouse.den.usage.readable_clusters`, over the short ``usage_clusters`` list) and the sums
keep to exactly those, in SQL.

Events are stamped with the time they are recorded, so an hour before the previous one never
changes again (:data:`SETTLE_H` allows for a report still committing, and for Den processes whose
clocks differ by less than that). Each Den process keeps in :class:`ClosedBuckets` the sums of a
window's settled hours and of each settled bucket, keyed by the exact list of clusters they were
summed over: a new share, a revoked one, a visibility change or a deleted cluster changes the list,
so sums are never served for a list they were not summed for. A page then sums only the hours
from the previous one on; when the window moves on, only the buckets it has not seen.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runhouse.den import usage as events
from runhouse.den.auth import Caller
from runhouse.den.models import UsageDay, UsageHour, utc_now

_EPOCH = datetime(1970, 1, 1)
MAX_TABLE_ROWS = 200
SETTLE_H = 1  # a bucket is closed once this many whole hours have passed since it ended
MAX_CACHED_ROWS = 200_000  # rows (kind, name, count, first, last) kept by one ClosedBuckets

Row = tuple[int, str, str, int, datetime, datetime]  # bucket, kind, user or cluster, count, first, last


@dataclass(frozen=True)
class Window:
    """A time range of the usage page, cut into ``buckets`` equal slices of whole hours."""

    start: datetime
    end: datetime
    buckets: int

    @property
    def step(self) -> timedelta:
        return (self.end - self.start) / self.buckets

    def bucket_starts(self) -> list[datetime]:
        return [self.start + self.step * i for i in range(self.buckets)]

    def hours(self) -> tuple[int, int]:
        """(first hour, hours per bucket), counted from 1970-01-01; ValueError unless both are whole."""
        start_s, step_s = (self.start - _EPOCH).total_seconds(), self.step.total_seconds()
        if start_s % 3600 or step_s % 3600:
            raise ValueError(f"usage is summed per hour; {self} is not cut in whole hours")
        return int(start_s) // 3600, int(step_s) // 3600


class _Totals:
    """Counts per (kind, user or cluster) per bucket, with the first and last time seen."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.series: dict[tuple[str, str], list[int]] = {}
        self.first: dict[tuple[str, str], datetime] = {}
        self.last: dict[tuple[str, str], datetime] = {}

    def add(self, rows: Iterable[Row]) -> None:
        series, firsts, lasts = self.series, self.first, self.last
        for i, kind, name, count, first, last in rows:
            key = (kind, name)
            counts = series.get(key)
            if counts is None:
                counts = series[key] = [0] * self.n
                firsts[key], lasts[key] = first, last
            else:
                if first < firsts[key]:
                    firsts[key] = first
                if last > lasts[key]:
                    lasts[key] = last
            counts[i] += count

    def copy(self) -> _Totals:
        made = _Totals(self.n)
        made.series = {key: list(counts) for key, counts in self.series.items()}
        made.first, made.last = dict(self.first), dict(self.last)
        return made


class ClosedBuckets:
    """Sums of closed buckets (the :data:`Row` s of each, and the :class:`_Totals` of the settled
    part of a window), least recently used dropped first past :data:`MAX_CACHED_ROWS` rows.
    Shared by the threads that serve pages; what it hands out is never changed."""

    def __init__(self, max_rows: int = MAX_CACHED_ROWS) -> None:
        self._kept: OrderedDict[tuple[Any, ...], tuple[int, Any]] = OrderedDict()
        self._rows = 0
        self._max_rows = max_rows
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            found = self._kept.get(key)
            if found is None:
                return None
            self._kept.move_to_end(key)
            return found[1]

    def put(self, key: tuple[Any, ...], value: Any, rows: int) -> None:
        with self._lock:
            old = self._kept.pop(key, None)
            self._rows += rows + 1 - (0 if old is None else old[0] + 1)
            self._kept[key] = (rows, value)
            while self._rows > self._max_rows and self._kept:
                _, (dropped, _) = self._kept.popitem(last=False)
                self._rows -= dropped + 1


@dataclass(frozen=True)
class Usage:
    """Counts per time bucket, kind and user or cluster, and their sums: the table behind the charts."""

    series: dict[tuple[str, str], list[int]]  # (kind, user or cluster) -> count per bucket
    table: list[tuple[str, str, int, datetime, datetime]]  # user or cluster, kind, count, first, last
    rows: int  # rows the table would have before :data:`MAX_TABLE_ROWS`


def _source(window: Window) -> tuple[Any, Any, int, int]:
    """(table, its period column, first period, periods per bucket): days when the window is cut
    in whole days, else hours."""
    start_h, step_h = window.hours()
    if start_h % 24 == 0 and step_h % 24 == 0:
        return UsageDay, UsageDay.day, start_h // 24, step_h // 24
    return UsageHour, UsageHour.hour, start_h, step_h


def _readable(session: Session, caller: Caller, cluster: str | None) -> list[str]:
    readable = events.readable_clusters(session, caller.user_id, caller.username)
    if cluster is None:
        return readable
    return [cluster] if cluster in readable else []


def _sums(
    session: Session, source: tuple[Any, Any, int, int], by: str, readable: list[str], lo: int, hi: int
) -> list[Row]:
    """Sums per bucket, kind and user or cluster of periods ``lo`` to ``hi`` (exclusive) of
    ``source`` (:func:`_source`), in one query; nothing to ask when the range is empty."""
    table, period, start, step = source
    if lo >= hi:
        return []
    key = table.username if by == "user" else table.cluster
    bucket = (period - start) // step
    query = (
        select(
            bucket, table.kind, key, func.sum(table.count), func.min(table.first_at), func.max(table.last_at)
        )
        .where(period >= lo, period < hi, events.among(session, table.cluster, readable))
        .group_by(bucket, table.kind, key)
    )
    return [(int(i), kind, name, int(n), f, la) for i, kind, name, n, f, la in session.execute(query)]


def usage(
    session: Session,
    caller: Caller,
    window: Window,
    by: str,
    cluster: str | None = None,
    closed: ClosedBuckets | None = None,
) -> Usage:
    """Usage the caller may see in ``window``, per bucket for charts (``by`` ``user`` or
    ``cluster``) and summed per user or cluster and kind for the table (the busiest rows).

    The window is summed in two parts: the hours before ``settled`` (which no longer change:
    whole buckets from :func:`_source`, the rest of the bucket they end in from ``usage_hours``),
    kept in ``closed``, and the hours from ``settled`` on, always from ``usage_hours``."""
    readable = _readable(session, caller, cluster)
    if not readable:
        return Usage({}, [], 0)
    start_h, step_h = window.hours()
    n = window.buckets
    end_h = start_h + n * step_h
    hours = (UsageHour, UsageHour.hour, start_h, step_h)
    settled = min(max(events.hour_of(utc_now()) - SETTLE_H, start_h), end_h)
    view = (hashlib.sha256("\n".join(readable).encode()).hexdigest(), by, step_h)
    head_key = ("head", *view, start_h, n, settled)
    head: _Totals | None = closed.get(head_key) if closed else None
    if head is None:
        head = _head(session, window, by, readable, settled, view, closed)
        if closed is not None:
            closed.put(head_key, head, len(head.series))
    totals = head.copy()
    totals.add(_sums(session, hours, by, readable, settled, end_h))
    return _usage(totals)


def _head(
    session: Session,
    window: Window,
    by: str,
    readable: list[str],
    settled: int,
    view: tuple[str, str, int],
    closed: ClosedBuckets | None,
) -> _Totals:
    """The totals of the window's hours before ``settled``; whole buckets found in ``closed`` are
    not summed again, and those summed here are put there."""
    start_h, step_h = window.hours()
    full = (settled - start_h) // step_h  # buckets that end by ``settled``
    source = _source(window)
    found = [closed.get(("bucket", *view, start_h + i * step_h)) if closed else None for i in range(full)]
    first = next((i for i, sums in enumerate(found) if sums is None), full)
    totals = _Totals(window.buckets)
    for i, sums in enumerate(found[:first]):  # kept under the bucket's start hour: index them anew
        totals.add((i, *row[1:]) for row in sums or ())
    start_p, step_p = source[2], source[3]
    summed = _sums(session, source, by, readable, start_p + first * step_p, start_p + full * step_p)
    totals.add(summed)
    if closed is not None:
        per_bucket: dict[int, list[Row]] = {i: [] for i in range(first, full)}
        for row in summed:
            per_bucket[row[0]].append(row)
        for i, rows in per_bucket.items():
            closed.put(("bucket", *view, start_h + i * step_h), tuple(rows), len(rows))
    hours = (UsageHour, UsageHour.hour, start_h, step_h)
    totals.add(_sums(session, hours, by, readable, start_h + full * step_h, settled))
    return totals


def _usage(totals: _Totals) -> Usage:
    table = sorted(
        (
            (name, kind, sum(counts), totals.first[(kind, name)], totals.last[(kind, name)])
            for (kind, name), counts in totals.series.items()
        ),
        key=lambda row: (-row[2], row[0], row[1]),
    )
    return Usage(totals.series, table[:MAX_TABLE_ROWS], len(table))


def usage_rows(session: Session, caller: Caller, window: Window) -> Iterable[tuple[str, str, str, str, int]]:
    """For the CSV export: (bucket start, user, cluster, kind, count), oldest first."""
    readable = _readable(session, caller, None)
    if not readable:
        return []
    table, period, start, step = _source(window)
    bucket = (period - start) // step
    keys = (bucket, table.username, table.cluster, table.kind)
    query = (
        select(*keys, func.sum(table.count))
        .where(
            period >= start,
            period < start + window.buckets * step,
            events.among(session, table.cluster, readable),
        )
        .group_by(*keys)
        .order_by(*keys)
    )
    starts = window.bucket_starts()
    return [(starts[int(i)].isoformat() + "Z", u, c, k, int(n)) for i, u, c, k, n in session.execute(query)]
