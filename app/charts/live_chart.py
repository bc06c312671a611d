"""A pyqtgraph line chart fed from SeriesBuffers and redrawn by a timer, never per event.

Thin cosmetic pens and peak downsampling keep long runs cheap (docs/platform-notes.md, "pyqtgraph live charts").
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QTimer

from app.charts.series_buffer import SeriesBuffer

pg.setConfigOptions(antialias=True, background="w", foreground="#333")

PALETTE = ["#2f6fdf", "#e0592a", "#2aa876", "#8e44ad", "#c0392b", "#7f8c8d"]


class LiveChart(pg.PlotWidget):
    def __init__(self, title: str = "", *, y_label: str = "", x_label: str = "", hz: float = 10.0) -> None:
        super().__init__()
        self.setMinimumHeight(160)
        plot = self.getPlotItem()
        if title:
            plot.setTitle(title, size="10pt")
        if y_label:
            plot.setLabel("left", y_label)
        if x_label:
            plot.setLabel("bottom", x_label)
        plot.showGrid(x=True, y=True, alpha=0.15)
        # Peak downsampling keeps long runs cheap and loss spikes visible. No clip-to-view: with auto-range
        # it clips points outside the current view, so a new series would never come into view.
        plot.setDownsampling(auto=True, mode="peak")
        plot.addLegend(offset=(-10, 10))
        self.buffers: dict[str, SeriesBuffer] = {}
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
        for name, buf in self.buffers.items():
            if buf.dirty:
                x, y = buf.view()
                self.curves[name].setData(x, y)
                buf.dirty = False

    def clear_all(self) -> None:
        for buf in self.buffers.values():
            buf.clear()
        self.redraw()
