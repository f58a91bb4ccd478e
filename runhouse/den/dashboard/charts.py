"""Usage charts as geometry for inline SVG: stacked bars over time, one colour per user or cluster.

The server computes every rectangle, so the page needs no chart library and no script; each
gets a ``<title>`` (its series, time and count), the template gives the chart a text summary, and
the table under the chart holds the same numbers. The rectangles are written as SVG here
(:meth:`Chart.bars_svg`, every text escaped by markupsafe) rather than by a template loop: a
90-day chart has about a thousand, and Jinja's per-value escaping cost more than the page's queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 220
LEFT = 48  # room for the axis labels
BOTTOM = 24
TOP = 8
MAX_SERIES = 7  # the busiest; the rest are summed as "others"
COLOURS = ("#2f6fb0", "#d9822b", "#3a9d5d", "#b03a48", "#7b5ea7", "#8c6d46", "#c36fb0", "#7f7f7f")
OTHERS = "others"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Legend:
    name: str
    colour: str
    total: int


@dataclass(frozen=True)
class Chart:
    kind: str
    title: str
    bars: list[Bar]
    legend: list[Legend]
    ticks: list[tuple[float, str]]  # (y, label) of the value axis
    labels: list[tuple[float, str]]  # (x, label) of the time axis
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = HEIGHT - BOTTOM

    def bars_svg(self) -> Markup:
        """Every bar as an SVG ``<rect>`` with its ``<title>``; names and titles escaped."""
        return Markup(
            "".join(
                f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{b.width:.1f}" height="{b.height:.1f}" '
                f'fill="{escape(b.colour)}"><title>{escape(b.title)}</title></rect>'
                for b in self.bars
            )
        )


def _top(series: dict[str, list[int]]) -> dict[str, list[int]]:
    ranked = sorted(series.items(), key=lambda item: (-sum(item[1]), item[0]))
    kept = dict(ranked[:MAX_SERIES])
    rest = ranked[MAX_SERIES:]
    if rest:
        kept[OTHERS] = [sum(values) for values in zip(*(v for _, v in rest), strict=True)]
    return kept


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def stacked(kind: str, title: str, series: dict[str, list[int]], starts: list[datetime]) -> Chart:
    """A chart of ``series`` (name -> count per bucket starting at ``starts``)."""
    shown = _top(series)
    buckets = len(starts)
    totals = [sum(values[i] for values in shown.values()) for i in range(buckets)]
    peak = _nice_max(max(totals, default=0) or 1)
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(buckets, 1)
    span = starts[-1] - starts[0] if buckets > 1 else None
    fmt = "%m-%d %H:%M" if span is not None and span.days < 3 else "%Y-%m-%d"
    bars: list[Bar] = []
    legend: list[Legend] = []
    base = [0] * buckets
    for index, (name, values) in enumerate(shown.items()):
        colour = COLOURS[-1] if name == OTHERS else COLOURS[index % (len(COLOURS) - 1)]
        legend.append(Legend(name, colour, sum(values)))
        for i, count in enumerate(values):
            if count:
                height = count / peak * plot_h
                y = TOP + plot_h - (base[i] / peak * plot_h) - height
                when = starts[i].strftime("%Y-%m-%d %H:%M")
                bars.append(
                    Bar(
                        LEFT + i * slot + 1,
                        y,
                        max(slot - 2, 1),
                        height,
                        colour,
                        f"{name}, {when} UTC: {count}",
                    )
                )
                base[i] += count
    ticks = [(TOP + plot_h - f * plot_h, f"{peak * f:g}") for f in (0, 0.5, 1)]
    every = max(1, buckets // 6)
    labels = [(LEFT + i * slot, starts[i].strftime(fmt)) for i in range(0, buckets, every)]
    return Chart(kind, title, bars, legend, ticks, labels, sum(totals))
