"""Training curves: raw train loss (faint), its EMA, validation loss as markers, the best checkpoint as a
vertical line (named in the legend, not by a label on the line, which would sit on the legend), and the learning
rate in a small plot below."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.charts.live_chart import LiveChart


class LossChart(QWidget):
    def __init__(self, smoothing: float = 0.9) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.loss = LiveChart("Loss (lower is better)", x_label="step", legend_room=True)
        self.raw = self.loss.add_series("each step", color="#2f6fdf", alpha=90)
        self.smooth = self.loss.add_series("smoothed", color="#2f6fdf", width=1.0)
        self.val = self.loss.add_series("validation", color="#e0592a", symbol="o")
        legend = self.loss.getPlotItem().legend
        if legend is not None:
            legend.setColumnCount(4)  # one row across the top: the curves stay visible in a short chart
        # Learning rates are around 1e-5: a scientific axis from 0 (a linear scale, since warm-up starts at 0).
        # No title or axis name of its own (the legend names it), so a short chart still has room to plot.
        self.lr = LiveChart(x_label="", scientific_y=True)
        self.lr.setMinimumHeight(90)
        self.lr.setMaximumHeight(150)
        self.lr_series = self.lr.add_series("learning rate", color="#8e44ad")
        best_pen = pg.mkPen("#2aa876", width=1, style=pg.QtCore.Qt.PenStyle.DashLine)
        self.best_line = pg.InfiniteLine(angle=90, movable=False, pen=best_pen)
        self.best_line.hide()
        self.loss.addItem(self.best_line)
        # The line's legend entry: a sample of its pen (an empty curve that is never plotted), shown with it.
        self.best_sample = pg.PlotDataItem(pen=best_pen)
        self.best_named = False
        self._ema: float | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.loss, 3)
        layout.addWidget(self.lr, 1)

    def clear(self) -> None:
        self._ema = None
        self.loss.clear_all()
        self.lr.clear_all()
        self.best_line.hide()
        self._name_best(False)

    def add_train(self, iteration: int, loss: float, lr: float | None = None) -> None:
        self.raw.append(iteration, loss)
        self._ema = loss if self._ema is None else self.smoothing * self._ema + (1 - self.smoothing) * loss
        self.smooth.append(iteration, self._ema)
        if lr is not None:
            self.lr_series.append(iteration, lr)

    def add_val(self, iteration: int, loss: float) -> None:
        self.val.append(iteration, loss)

    def mark_best(self, iteration: int) -> None:
        self.best_line.setValue(iteration)
        self.best_line.show()
        self._name_best(True)

    def _name_best(self, shown: bool) -> None:
        legend = self.loss.getPlotItem().legend
        if legend is None or shown == self.best_named:
            return
        if shown:
            legend.addItem(self.best_sample, "best checkpoint")  # in the theme's label colour
        else:
            legend.removeItem(self.best_sample)
        self.best_named = shown

    def load_records(self, records: list[dict]) -> None:
        """Draw a past run from its metrics.jsonl records."""
        self.clear()
        best = None
        for rec in records:
            if rec.get("type") == "train":
                self.add_train(rec["iteration"], rec["train_loss"], rec.get("learning_rate"))
            elif rec.get("type") == "val":
                self.add_val(rec["iteration"], rec["val_loss"])
                if best is None or rec["val_loss"] < best[1]:
                    best = (rec["iteration"], rec["val_loss"])
        if best is not None:
            self.mark_best(best[0])
        self.loss.redraw()
        self.lr.redraw()
