"""A pyqtgraph line chart fed from SeriesBuffers and redrawn by a timer, never per event.

Thin cosmetic pens and peak downsampling keep long runs cheap (docs/platform-notes.md, "pyqtgraph live charts").
Charts follow the app's light/dark theme (`follow_theme`). A chart over time (`time_axis=True`) takes x values in
seconds since the epoch and labels its axis with the clock (14:05, 14:05:30), and shows at least
`MIN_TIME_SPAN_S` so that one or two points never give an axis of "9.1221 ... 9.1223".
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QTimer

from app.appearance import appearance, current_theme
from app.charts.series_buffer import SeriesBuffer
from app.style import Theme

pg.setConfigOptions(antialias=True, background="w", foreground="#333")

PALETTE = ["#2f6fdf", "#e0592a", "#2aa876", "#8e44ad", "#c0392b", "#7f8c8d"]
MIN_TIME_SPAN_S = 300.0  # a chart over time shows at least five minutes


def sci_text(value: float) -> str:
    """A tick label in scientific notation: 1e-5, 2.5e-6, 0 (what a learning rate axis needs)."""
    if value == 0 or abs(value) < 1e-300:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


class ScientificAxis(pg.AxisItem):
    """An axis whose labels are in scientific notation (1e-5), for values far below 1."""

    def __init__(self, orientation: str) -> None:
        super().__init__(orientation)
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph override
        return [sci_text(v * scale) for v in values]


class IntegerAxis(pg.AxisItem):
    """An axis for counts: ticks only at whole numbers (no "0.5 answers")."""

    def __init__(self, orientation: str) -> None:
        super().__init__(orientation)
        self.enableAutoSIPrefix(False)

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph override
        levels = [(max(1.0, float(math.ceil(spacing))), offset)
                  for spacing, offset in super().tickSpacing(minVal, maxVal, size)]
        return levels[:1] if levels else [(1.0, 0.0)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph override
        return [f"{round(v * scale):d}" for v in values]


def apply_chart_theme(widget: pg.PlotWidget, theme: Theme, title: str = "") -> None:
    """Colour one plot for the theme: background, axes, tick labels, title and legend."""
    widget.setBackground(theme.chart_bg)
    plot = widget.getPlotItem()
    for name in ("left", "bottom", "right", "top"):
        axis = plot.getAxis(name)
        axis.setPen(theme.chart_fg)
        axis.setTextPen(theme.chart_fg)
        if axis.labelText:
            axis.setLabel(axis.labelText, units=axis.labelUnits, color=theme.chart_fg)
    if title:
        plot.setTitle(title, size="10pt", color=theme.chart_fg)
    legend = plot.legend
    if legend is not None:
        legend.setLabelTextColor(theme.chart_fg)
        for _sample, label in legend.items:  # labels already drawn keep their colour until set again
            label.setText(label.text, color=theme.chart_fg)


class _ThemeFollower(QObject):
    """Recolours its parent plot when the theme changes (a child, so the connection ends with the plot)."""

    def __init__(self, widget: pg.PlotWidget, title: str) -> None:
        super().__init__(widget)
        self.widget, self.title = widget, title

    def apply(self, theme: Theme) -> None:
        apply_chart_theme(self.widget, theme, self.title)


def follow_theme(widget: pg.PlotWidget, title: str = "") -> None:
    """Colour a plot for the current theme now and whenever the theme changes."""
    follower = _ThemeFollower(widget, title)
    follower.apply(current_theme())
    appearance().changed.connect(follower.apply)


class LiveChart(pg.PlotWidget):
    def __init__(self, title: str = "", *, y_label: str = "", x_label: str = "", hz: float = 10.0,
                 scientific_y: bool = False, time_axis: bool = False, integer_y: bool = False,
                 y_from_zero: bool = False, legend_room: bool = False) -> None:
        # scientific_y: tick labels like 1e-5, and the y axis from 0 to just above the largest value (a
        # constant learning rate is then a visible line, not a flat 0 on a +-0.4 axis).
        # time_axis: x in seconds since the epoch, labelled with the clock; the x range is set by
        # `show_time_span` (at least MIN_TIME_SPAN_S), not fitted to the points.
        # integer_y: whole-number ticks (counts). y_from_zero: the y axis from 0 to just above the largest value.
        # legend_room: the y axis fitted to the values with room above them for the legend, which sits inside
        # the plot at the top: no curve runs under its labels.
        axes: dict[str, pg.AxisItem] = {}
        if scientific_y:
            axes["left"] = ScientificAxis("left")
        elif integer_y:
            axes["left"] = IntegerAxis("left")
        if time_axis:
            axes["bottom"] = pg.DateAxisItem(orientation="bottom")
        super().__init__(axisItems=axes or None)
        self.scientific_y = scientific_y
        self.y_from_zero = scientific_y or y_from_zero
        self.legend_room = legend_room
        self.time_axis = time_axis
        self.time_span: tuple[float, float] | None = None
        self.title = title
        self.setMinimumHeight(120)
        plot = self.getPlotItem()
        if y_label:
            plot.setLabel("left", y_label)
        if x_label:
            plot.setLabel("bottom", x_label)
        plot.showGrid(x=True, y=True, alpha=0.15)
        # Peak downsampling keeps long runs cheap and loss spikes visible. No clip-to-view: with auto-range
        # it clips points outside the current view, so a new series would never come into view.
        plot.setDownsampling(auto=True, mode="peak")
        plot.addLegend(offset=(-10, 4), labelTextSize="8pt", verSpacing=-6)
        if self.y_from_zero or legend_room:
            plot.enableAutoRange(y=False)
        if legend_room:
            plot.getViewBox().sigResized.connect(lambda _view: self._fit_y())  # the legend's share changed
        if self.y_from_zero:
            plot.setYRange(0, 1e-5 if scientific_y else 1, padding=0)
        if time_axis:
            plot.enableAutoRange(x=False)
            plot.setMouseEnabled(x=False, y=False)
            now = time.time()
            self.show_time_span(now, now)
        follow_theme(self, title)
        self.buffers: dict[str, SeriesBuffer] = {}
        self.bands: list[pg.LinearRegionItem] = []
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / hz))
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def add_series(self, name: str, *, color: str | None = None, width: float = 1.0, symbol: str | None = None,
                   dash: bool = False, alpha: int = 255) -> SeriesBuffer:
        color = color or PALETTE[len(self.buffers) % len(PALETTE)]
        qcolor = pg.mkColor(color)
        qcolor.setAlpha(alpha)
        pen = pg.mkPen(qcolor, width=width, cosmetic=True)
        if dash:
            from PySide6.QtCore import Qt

            pen.setStyle(Qt.PenStyle.DashLine)
        kwargs = {"name": name, "pen": pen, "skipFiniteCheck": True}
        if symbol:
            kwargs.update(symbol=symbol, symbolBrush=qcolor, symbolPen=None, symbolSize=6)
        self.curves[name] = self.plot([], [], **kwargs)
        self.buffers[name] = SeriesBuffer()
        return self.buffers[name]

    def redraw(self) -> None:
        changed = False
        for name, buf in self.buffers.items():
            if buf.dirty:
                x, y = buf.view()
                self.curves[name].setData(x, y)
                buf.dirty = False
                changed = True
        if changed and (self.y_from_zero or self.legend_room):
            self._fit_y()

    def _fit_y(self) -> None:
        shown = [v[np.isfinite(v)] for v in (buf.view()[1] for buf in self.buffers.values() if buf.n)]
        shown = [v for v in shown if v.size]
        if not shown:
            return
        high = max(float(v.max()) for v in shown)
        low = 0.0 if self.y_from_zero else min(float(v.min()) for v in shown)
        if self.y_from_zero and high <= 0:
            return
        span = high - low or abs(high) or 1.0
        bottom = low if self.y_from_zero else low - 0.05 * span
        top = high + (0.15 if self.y_from_zero else 0.05) * span
        if self.legend_room:
            top += (top - bottom) * self._legend_share()
        self.getPlotItem().setYRange(bottom, top, padding=0)

    def _legend_share(self) -> float:
        """The legend's height (with its offset from the top) over the height of the plot below it."""
        legend = self.getPlotItem().legend
        view = self.getPlotItem().getViewBox().height()
        if legend is None or not legend.isVisible() or view <= 0:
            return 0.0
        used = legend.boundingRect().height() + 8
        return used / max(view - used, 0.3 * view)

    def show_time_span(self, start: float, end: float) -> None:
        """Show from `start` to `end` (seconds since the epoch), at least MIN_TIME_SPAN_S wide. (Charts over
        time only; called by the page as time passes, so the axis reaches the present.)"""
        end = max(end, start + MIN_TIME_SPAN_S)
        if self.time_span is not None and abs(self.time_span[0] - start) < 1e-3 and abs(
                self.time_span[1] - end) < 0.5:
            return
        self.time_span = (start, end)
        self.getPlotItem().setXRange(start, end, padding=0.02)

    def x_tick_labels(self) -> list[str]:
        """The x axis's tick labels as drawn now (for tests and screen readers)."""
        return self._tick_labels("bottom", 0, self.size().width() or 300)

    def y_tick_labels(self) -> list[str]:
        """The y axis's tick labels as drawn now (for tests and screen readers)."""
        return self._tick_labels("left", 1, self.getPlotItem().getAxis("left").size().height() or 100)

    def _tick_labels(self, name: str, dim: int, size: float) -> list[str]:
        axis = self.getPlotItem().getAxis(name)
        low, high = self.getPlotItem().viewRange()[dim]
        labels: list[str] = []
        for spacing, values in axis.tickValues(low, high, size):
            labels += axis.tickStrings(values, axis.scale, spacing)
        return labels

    def add_band(self, start: float, end: float) -> pg.LinearRegionItem:
        """A shaded stretch of x behind the curves (e.g. a pause); move its end with `setRegion`."""
        band = pg.LinearRegionItem((start, end), movable=False, brush=pg.mkBrush(128, 128, 128, 45),
                                   pen=pg.mkPen(None))
        band.setZValue(-10)
        self.addItem(band)
        self.bands.append(band)
        return band

    def clear_all(self) -> None:
        for buf in self.buffers.values():
            buf.clear()
        for band in self.bands:
            self.removeItem(band)
        self.bands.clear()
        self.redraw()

