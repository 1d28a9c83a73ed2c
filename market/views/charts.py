"""Server-side SVG charts for the dashboards: no script, no CDN, nothing inline but the SVG itself.

Colours and strokes come from classes styled in static/css/cpx.css (`.series-0` …), never from
`style=` attributes, so the pages keep a strict Content-Security-Policy. Every chart is an `<svg
role="img">` with a `<title>` and `<desc>`; its numbers are in a table beside it and in a CSV.
"""

import math
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 12, 22, 28
# A point this many times above the 90th percentile is an outlier (round 1's empty-book spike):
# the scale stops at the percentile's headroom and the outlier is drawn on the top edge, labelled.
OUTLIER_FACTOR = 3.0
OUTLIER_HEADROOM = 1.25
SERIES_CLASSES = 8
MAX_DOTS = 120  # beyond this many points a line is dense enough without them


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float]]  # (x, y); y None points are gaps


def _nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    # Until a tick reaches the top value: the highest point must lie inside the plot.
    while (not ticks or ticks[-1] < high) and len(ticks) < 12:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _scale_top(ys: list[float]) -> tuple[float, bool]:
    """The top of the y scale, and whether outliers are clipped to it (OUTLIER_FACTOR above)."""
    top = max(ys)
    ordered = sorted(ys)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * (len(ordered) - 1) + 0.5))]
    if len(ys) >= 5 and p90 > 0 and top > OUTLIER_FACTOR * p90:
        return p90 * OUTLIER_HEADROOM, True
    return top, False


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.4f}".rstrip("0").rstrip(".")


def line_chart(
    series: list[Series],
    *,
    title: str,
    description: str,
    x_label: str = "round",
    y_unit: str = "",
    bridge_gaps: bool = False,
) -> SafeString:
    """Lines over a shared x axis (round ids), with y ticks, the y axis's unit and an x range;
    empty → a plain note.

    A None y is a gap: the line breaks there, or with `bridge_gaps` (prices of a class that did not
    trade every round) joins its neighbours, with a dot on every real point. A lone spike (over
    OUTLIER_FACTOR x the 90th percentile) would flatten every other point: the scale stops below
    it, and it is drawn on the top edge with its value, so the rest stays readable."""
    values = [(x, y) for s in series for x, y in s.points if y is not None]
    if not values:
        return mark_safe('<p class="empty">No data yet: charts appear once rounds have cleared.</p>')
    xs = [x for s in series for x, _ in s.points]  # the whole window, so charts side by side align
    ys = [y for _, y in values]
    x_low, x_high = min(xs), max(xs)
    top, clipped = _scale_top(ys)
    ticks = _nice_ticks(min(0.0, min(ys)), top)
    y_low, y_high = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def sx(x):
        return PAD_LEFT + (0.5 if x_high == x_low else (x - x_low) / (x_high - x_low)) * plot_w

    def sy(y):
        return PAD_TOP + (1 - (min(y, y_high) - y_low) / ((y_high - y_low) or 1)) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title><desc>{escape(description)}</desc>'
    ]
    for tick in ticks:
        y = sy(tick)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>'
        )
    if y_unit:
        parts.append(f'<text class="tick unit" x="4" y="12">{escape(y_unit)}</text>')
    above = [(x, y) for s in series for x, y in s.points if y is not None and y > y_high]
    if clipped and above:
        peak_x, peak = max(above, key=lambda point: point[1])
        parts.append(
            f'<text class="tick clipped" x="{WIDTH - PAD_RIGHT}" y="12" text-anchor="end">'
            f"{len(above)} off scale, up to {_label(peak)} ({x_label} {peak_x:g}) ▲</text>"
        )
    parts.append(
        f'<text class="tick" x="{PAD_LEFT}" y="{HEIGHT - 8}">{x_label} {x_low:g}</text>'
        f'<text class="tick" x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{x_label} {x_high:g}</text>"
    )
    for index, s in enumerate(series):
        css = f"series-{index % SERIES_CLASSES}"
        runs, run = [], []
        for x, y in s.points:
            if y is None:
                if run and not bridge_gaps:
                    runs.append(run)
                    run = []
            else:
                run.append((sx(x), sy(y)))
        if run:
            runs.append(run)
        for points in runs:
            if len(points) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                parts.append(f'<polyline class="line {css}" points="{path}"/>')
            if len(points) == 1 or (bridge_gaps and len(points) <= MAX_DOTS):
                parts.extend(
                    f'<circle class="dot {css}" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>' for x, y in points
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def legend(names: list[str]) -> list[dict]:
    """The series' names with the class that colours them, for the template's legend."""
    return [{"name": name, "css": f"series-{index % SERIES_CLASSES}"} for index, name in enumerate(names)]
