"""The loss chart drawn from a real training run's records: the legend names every line (the best checkpoint too)
and no curve or label runs under it, in a wide and in a narrow chart, light and dark."""

from __future__ import annotations

import json

import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPointF, QRectF

from app.appearance import appearance
from app.charts.loss_chart import LossChart
from lemcore.train.config import TrainConfig
from lemcore.train.engine import train_lora


def _data(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"messages": [{"role": "user", "content": f"Rule {i % 3}?"},
                                     {"role": "assistant", "content": ["Ask first.", "Keep it private.",
                                                                       "Say what you know."][i % 3]}]})
            for i in range(24)]
    (folder / "train.jsonl").write_text("\n".join(rows[:18]) + "\n")
    (folder / "valid.jsonl").write_text("\n".join(rows[18:]) + "\n")
    return folder


@pytest.fixture(scope="module")
def records(tiny_llama, tmp_path_factory, uncompiled_mlx) -> list[dict]:
    """metrics.jsonl of a real eight-step LoRA run on the tiny model, validated every two steps."""
    folder = tmp_path_factory.mktemp("loss-chart")
    config = TrainConfig(model=str(tiny_llama), data=str(_data(folder / "data")), iters=8, batch_size=2,
                         steps_per_eval=2, save_every=2, learning_rate=1e-5, num_layers=2,
                         adapter_path=str(folder / "run"))
    result = train_lora(config)
    return [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def system_look_after():
    """The test switches the whole application's look: back to the system's afterwards."""
    yield
    appearance().set_mode("system")


def _curve_points(chart: LossChart) -> list[QPointF]:
    """Every plotted point of the loss chart, in scene coordinates."""
    view = chart.loss.getPlotItem().getViewBox()
    points = []
    for buf in (chart.raw, chart.smooth, chart.val):
        xs, ys = buf.view()
        points += [view.mapViewToScene(QPointF(float(x), float(y))) for x, y in zip(xs, ys, strict=True)]
    return points


@pytest.mark.parametrize("size", [(620, 380), (420, 300)])
def test_the_legend_names_the_best_checkpoint_and_nothing_runs_under_it(qtbot, records, size, system_look_after) -> None:
    vals = [r for r in records if r.get("type") == "val"]
    assert len(vals) >= 3
    chart = LossChart()
    qtbot.addWidget(chart)
    chart.resize(*size)
    chart.show()
    qtbot.waitExposed(chart)
    chart.load_records(records)
    best = min(vals, key=lambda r: r["val_loss"])["iteration"]
    assert chart.best_line.isVisible() and chart.best_line.value() == best
    legend = chart.loss.getPlotItem().legend
    assert [label.text for _sample, label in legend.items] == ["each step", "smoothed", "validation",
                                                                "best checkpoint"]
    for mode in ("light", "dark"):
        appearance().set_mode(mode)
        qtbot.wait(50)
        box: QRectF = legend.sceneBoundingRect()
        # No label on the plot but the legend's own (the line's "best" used to sit on the legend).
        view = chart.loss.getPlotItem().getViewBox()
        labels = [item for item in view.allChildren() if isinstance(item, (pg.TextItem, pg.InfLineLabel))]
        assert not [item for item in labels if item.sceneBoundingRect().intersects(box)]
        # Every point of every curve lies below the legend.
        points = _curve_points(chart)
        assert points and all(p.y() > box.bottom() for p in points), (box, min(p.y() for p in points))
        # Its labels take the theme's colour, the best checkpoint's too.
        colours = {pg.mkColor(label.opts["color"]).name() for _sample, label in legend.items}
        assert len(colours) == 1, colours
    chart.clear()
    assert [label.text for _sample, label in legend.items] == ["each step", "smoothed", "validation"]
