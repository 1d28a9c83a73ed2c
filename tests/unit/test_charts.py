"""The dashboards' SVG charts: the y axis states its unit, a lone spike does not flatten the rest,
and no point is drawn above the plot (the settlement gas chart did)."""

import re

from market.views.charts import HEIGHT, PAD_TOP, Series, _nice_ticks, line_chart


def ys_drawn(svg: str) -> list[float]:
    points = re.findall(r'points="([^"]+)"', svg)
    return [float(pair.split(",")[1]) for path in points for pair in path.split()]


class TestTicks:
    def test_the_top_tick_reaches_the_highest_value(self):
        for high in (1.24, 1.26, 7.4, 980.0, 40_123.0, 0.0134):
            assert _nice_ticks(0.0, high)[-1] >= high, high


class TestLineChart:
    def test_states_the_y_axis_unit(self):
        svg = line_chart([Series("ms", [(1, 3.0), (2, 4.0)])], title="t", description="d", y_unit="ms")

        assert '<text class="tick unit"' in svg and ">ms</text>" in svg

    def test_no_point_is_drawn_above_the_plot(self):
        # gas per lease just above a tick: the last tick used to stop below it.
        svg = line_chart([Series("gas", [(1, 1240.0), (2, 1190.0), (3, 1236.0)])], title="t", description="d")

        assert min(ys_drawn(svg)) >= PAD_TOP - 0.05
        assert max(ys_drawn(svg)) <= HEIGHT

    def test_a_first_round_spike_does_not_flatten_the_rest(self):
        points = [(1, 500.0)] + [(round_id, 1.0 + (round_id % 3) * 0.5) for round_id in range(2, 40)]

        svg = line_chart([Series("ms", points)], title="t", description="d")

        ys = ys_drawn(svg)[1:]  # the other rounds
        plot = HEIGHT - 28 - PAD_TOP
        assert max(ys) - min(ys) > plot / 3  # they span a third of the plot, not one pixel
        assert "1 off scale, up to 500 (round 1)" in svg
