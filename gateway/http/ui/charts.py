"""Charts drawn on the server as SVG: no script, nothing to vendor, the same strict CSP
as every page, readable without JavaScript, and each chart has its figures in a table
beside it for screen readers. Geometry only here; the templates draw the marks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

WIDTH, HEIGHT = 560, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28
#: Fill colours of stacked series (colour-blind safe, Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


@dataclass
class Point:
    x: float
    y: float
    value: float
    label: str


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    series: str
    colour: str
    label: str


@dataclass
class Chart:
    id: str
    title: str
    unit: str
    labels: list[str]
    points: list[Point] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    series: list[tuple[str, str]] = field(default_factory=list)
    """Legend of a bar chart: (name, colour)."""
    ticks: list[tuple[float, str]] = field(default_factory=list)
    """y position and text of each horizontal grid line."""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT

    @property
    def path(self) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{p.x:.1f},{p.y:.1f}" for i, p in enumerate(self.points))

    @property
    def axis(self) -> list[tuple[float, str]]:
        """x position and text of every other week's label (and the last one's)."""
        count = len(self.labels)
        return [(_x(i, count), t) for i, t in enumerate(self.labels) if i % 2 == 0 or i == count - 1]

    @property
    def empty(self) -> bool:
        return not self.points and not any(b.value for b in self.bars)


def _x(index: int, count: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + (span * (index + 0.5) / count if count else 0)


def _y(value: float, top: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - (value / top if top else 0))


def _ticks(top: float, fmt: str) -> list[tuple[float, str]]:
    return [(_y(top * f, top), fmt.format(top * f)) for f in (0, 0.5, 1)]


def line(chart_id: str, title: str, weeks: list[date], values: list[float | None], unit: str) -> Chart:
    """A line over the weeks; weeks without a figure are left out of the line."""
    labels = [f"{w:%m-%d}" for w in weeks]
    known = [v for v in values if v is not None]
    top = max(known, default=0) or 1.0
    if unit == "%":
        top = max(top, 0.01)
    fmt = ("{:.0%}" if top >= 0.1 else "{:.1%}") if unit == "%" else "{:.1f}"
    chart = Chart(chart_id, title, unit, labels, ticks=_ticks(top, fmt))
    for i, value in enumerate(values):
        if value is not None:
            shown = f"{value:.1%}" if unit == "%" else f"{value:g} {unit}"
            label = f"week of {weeks[i]}: {shown}"
            chart.points.append(Point(_x(i, len(values)), _y(value, top), value, label))
    return chart


def stacked(chart_id: str, title: str, weeks: list[date], series: dict[str, list[int]]) -> Chart:
    """Bars per week, one segment per series (violations by rule)."""
    labels = [f"{w:%m-%d}" for w in weeks]
    totals = [sum(s[i] for s in series.values()) for i in range(len(weeks))]
    top = max(max(totals, default=0), 1)
    chart = Chart(chart_id, title, "count", labels, ticks=_ticks(top, "{:.0f}"))
    width = (WIDTH - LEFT - RIGHT) / max(len(weeks), 1) * 0.6
    chart.series = [(name, PALETTE[n % len(PALETTE)]) for n, name in enumerate(series)]
    base = [0] * len(weeks)
    for (name, colour), counts in zip(chart.series, series.values(), strict=True):
        for i, count in enumerate(counts):
            if count:
                y = _y(base[i] + count, top)
                height = _y(base[i], top) - y
                label = f"week of {weeks[i]}: {count} × {name}"
                x = _x(i, len(weeks)) - width / 2
                chart.bars.append(Bar(x, y, width, height, count, name, colour, label))
                base[i] += count
    return chart
