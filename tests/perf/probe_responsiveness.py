"""GUI responsiveness while the engines work: a 5 ms timer on the GUI thread records every gap.

Phase 1 contributes with the real engine (SmolLM2 by default, `--model tiny` for a tiny model); phase 2
trains a LoRA adapter on a tiny model from the Train page. MLX jobs share one engine thread, so the phases
run one after the other. Prints the largest and 99th-percentile event-loop stall per phase (target: < 50 ms),
and what the generation phase reached (first token, answers saved): a phase that only read the sandwiches says
nothing about the window while answers stream in. Runs with the app's BLAS re-exec, as the app does.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m tests.perf.probe_responsiveness [--seconds 140]
        [--trace-stalls-ms 20 --trace-file stalls.txt]

`--trace-stalls-ms` writes every thread's Python stack to the trace file each time the GUI timer is that
late (faulthandler's watchdog, re-armed at every tick; it needs no GIL): how the stalls of
docs/platform-notes.md, "GIL release and GUI stalls", were traced to their causes.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    # 140 s: a SmolLM2 run reads its 16 sandwiches for ~70-80 s, then writes; its first answers (128 tokens) end
    # together at ~105 s, the moment the window has most to draw.
    parser.add_argument("--seconds", type=float, default=140)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--trace-stalls-ms", type=float, default=0, help="dump all stacks when this late")
    parser.add_argument("--trace-file", default="stalls.txt")
    args = parser.parse_args()
    from lemcore.blas import reexec_with_openblas

    reexec_with_openblas()  # as app.main does on Linux: the engines' speed, and so the GUI's load, as launched
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp())
    os.environ["LEM_CONFIG_DIR"], os.environ["LEM_DATA_DIR"] = str(tmp / "c"), str(tmp / "d")

    import numpy as np
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from lemcore.secrets import MemoryTokenStore
    from lemcore.settings import Settings, save_settings
    from tests.tiny_models import make_tiny_model

    tiny = make_tiny_model(tmp / "tiny")
    model = "" if args.model == "smollm2" else str(tiny)
    save_settings(Settings(first_run_done=True, solo=True, model_override=model, max_tokens=128,
                           only_on_power=False, min_free_memory_gb=0.5, preset="max"))
    from app.jobs.startup import prepare_gui_process

    app = QApplication.instance() or QApplication([])
    prepare_gui_process()  # as app.main does before its window
    window = MainWindow(token_store=MemoryTokenStore())
    window.show()
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    trace = open(args.trace_file, "w") if args.trace_stalls_ms else None  # noqa: SIM115 - open for the run

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now
        if trace is not None:
            faulthandler.cancel_dump_traceback_later()
            faulthandler.dump_traceback_later((5 + args.trace_stalls_ms) / 1000, file=trace)

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    timer.start()

    def run_for(seconds: float, until=lambda: False) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            app.processEvents()
            time.sleep(0.001)

    def phase(name: str) -> None:
        g = np.array(gaps[5:]) - 5.0  # time beyond the timer's own interval
        at = np.cumsum(np.array(gaps[5:])) / 1000
        worst = ", ".join(f"{g[i]:.0f} ms at {at[i]:.1f} s" for i in np.argsort(g)[::-1][:3])
        print(f"{name}: {len(g)} ticks, max stall {g.max():.1f} ms, p99 {np.percentile(g, 99):.1f} ms, "
              f"stalls > 50 ms: {(g > 50).sum()} (worst: {worst}; load average {os.getloadavg()[0]:.1f})")
        gaps.clear()

    page = window.contribute
    # What the phase covered, from the page's own engine events: the first token written (after the sandwiches
    # are read) and the answers saved (each one redraws tiles and charts).
    from lemcore.contribute.events import ResponseDone
    from lemcore.generate.engine import TokenChunk

    first_token: list[float] = []
    saved = [0]
    started = time.monotonic()
    handle = page.on_event

    def counting(event) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, TokenChunk) and not first_token:
            first_token.append(time.monotonic() - started)
        saved[0] += isinstance(event, ResponseDone)
        handle(event)

    page.on_event = counting  # type: ignore[method-assign]
    page.start()
    run_for(args.seconds)
    phase(f"generation ({args.model})")
    print(f"  answers saved in it: {saved[0]}; "
          + (f"first token {first_token[0]:.1f} s after start" if first_token else "no token written (reading only)"))
    page.finish()
    run_for(120, lambda: page.start_btn.isEnabled())
    gaps.clear()

    data = tmp / "data"
    data.mkdir()
    rows = [json.dumps({"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A."}]})
            for i in range(40)]
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    (data / "valid.jsonl").write_text("\n".join(rows[:8]) + "\n")
    train = window.pages["Train"]
    form = train.form
    form.widgets["model"].setText(str(tiny))
    form.widgets["data"].setText(str(data))
    form.widgets["iters"].setValue(100000)
    form.widgets["num_layers"].setValue(-1)
    train.start()
    run_for(args.seconds)
    phase("training (tiny model)")
    train.stop()
    run_for(60, lambda: train.start_btn.isEnabled())
    if trace is not None:
        faulthandler.cancel_dump_traceback_later()
        trace.close()
        print(f"stacks at each stall over {args.trace_stalls_ms:.0f} ms: {args.trace_file}")
    window.runner.shutdown()


if __name__ == "__main__":
    main()
