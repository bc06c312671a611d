"""Training throughput: lem's engine (`train_lora`) vs the `mlx_lm lora` command line, same model, data and
settings, in one run. Not a pytest test: run it directly.

    .venv/bin/python tests/perf/bench_training.py [--iters 200] [--smollm2-iters 30] [--repeats 4]
                                                  [--models tiny,smollm2]

Both sides use mlx-lm's trainer; ours adds a callback every step, our batch iterator, metrics.jsonl and
events. Ours runs as `lem train` in a subprocess, symmetric with the CLI, in back-to-back pairs whose order
alternates; the headline is the median of the pairs' ratios, which cancels slow drift in a shared machine's
load (on the tiny model it also runs in this process). Throughput is wall-clock tokens/s over the same window of iterations (from the 10th to the
(iters-10)th: compilation and the validations at the start and end are outside it). Every example has the
same length and the training set covers the whole run in one epoch, so both sides train on exactly the same
batches; the script checks that by comparing their reported losses. Target: ours >= 0.95x the CLI.

It also checks, on the compiled path the pytest suite skips, that a cancelled and resumed run repeats the
uninterrupted run's losses, and prints the memory estimate beside the measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lemcore.blas import preload_env, reexec_with_openblas  # noqa: E402

reexec_with_openblas()  # same BLAS in this process as in the CLI subprocess (preload_env)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CLI_TRAIN_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+[▼▲]\s+([\d,]+)\s+([\d.]+)k\s*$")
LEM_TRAIN_LINE = re.compile(r"^Iter (\d+)/\d+: train loss")
WORDS = ["volunteers", "library", "honest", "careful", "answer", "numbers", "chairs", "tea", "books", "Saturday",
         "kindness", "trust", "promise", "question", "reply", "fairness", "listen", "share", "credit", "mistake"]


def make_data(folder: Path, n_train: int, words: int = 40) -> Path:
    """Chat examples of identical length (same word count, same words rotated); a quarter is the prompt."""
    folder.mkdir(parents=True, exist_ok=True)

    def example(i: int) -> dict[str, Any]:
        text = [WORDS[(i + k) % len(WORDS)] for k in range(words)]
        return {"messages": [{"role": "user", "content": " ".join(text[:words // 4]) + "?"},
                             {"role": "assistant", "content": " ".join(text[words // 4:]) + "."}]}

    for name, count, offset in (("train", n_train, 0), ("valid", 4, 7)):
        rows = [json.dumps(example(i + offset)) for i in range(count)]
        (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def window_rate(points: dict[int, tuple[float, int]], start: int, end: int) -> float:
    (t0, tok0), (t1, tok1) = points[start], points[end]
    return (tok1 - tok0) / (t1 - t0)


def run_ours(config: Any) -> dict[str, Any]:
    from lemcore.train.engine import train_lora
    from lemcore.train.events import TrainStarted, TrainStep

    points: dict[int, tuple[float, int]] = {}
    losses: dict[int, float] = {}
    info: dict[str, Any] = {}

    def report(event: Any) -> None:
        if isinstance(event, TrainStep):
            points[event.iteration] = (time.perf_counter(), event.trained_tokens)
            losses[event.iteration] = event.train_loss
            info["peak"] = event.peak_memory_gb
        elif isinstance(event, TrainStarted):
            info["estimate"] = event.estimated_peak_gb

    shutil.rmtree(config.adapter_path, ignore_errors=True)
    train_lora(config, report=report)
    return {"points": points, "losses": losses, **info}


def _timed_lines(argv: list[str], cwd: Path, pattern: re.Pattern[str]) -> dict[int, tuple[float, str]]:
    """Run a command; for each stdout line matching `pattern` (group 1 = iteration): arrival time, line."""
    env = preload_env({**os.environ, "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=cwd, encoding="utf-8", errors="replace")
    found: dict[int, tuple[float, str]] = {}
    tail: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.perf_counter()
            text = ANSI.sub("", raw).rstrip()
            tail.append(text)
            if m := pattern.match(text):
                found[int(m.group(1))] = (now, text)

    reader = threading.Thread(target=read)
    reader.start()
    code = proc.wait()
    reader.join()
    if code != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({code}):\n" + "\n".join(tail[-20:]))
    return found


def run_mlx_cli(config: Any, workdir: Path) -> dict[int, tuple[float, float, float]]:
    """`python -m mlx_lm lora` with the config's equivalent command -> iteration: (time, window loss, k tokens)."""
    shutil.rmtree(config.adapter_path, ignore_errors=True)
    yaml_path = config.save_yaml(workdir / "cli-config.yaml")
    argv = [sys.executable, "-m", "mlx_lm", *config.to_command(str(yaml_path))[1:]]
    out = {}
    for it, (t, text) in _timed_lines(argv, workdir, CLI_TRAIN_LINE).items():
        m = CLI_TRAIN_LINE.match(text)
        assert m is not None
        out[it] = (t, float(m.group(2)), float(m.group(4)))
    return out


def run_lem_cli(config: Any, workdir: Path) -> dict[int, float]:
    """`lem train -c config.yaml` (this engine behind our own command line) -> iteration: time."""
    shutil.rmtree(config.adapter_path, ignore_errors=True)
    yaml_path = config.save_yaml(workdir / "lem-config.yaml")
    argv = [sys.executable, "-m", "lemcore.cli.main", "train", "-c", str(yaml_path)]
    return {it: t for it, (t, _) in _timed_lines(argv, ROOT, LEM_TRAIN_LINE).items()}


def compare(name: str, config: Any, repeats: int, workdir: Path, in_process: bool) -> dict[str, Any]:
    """Back-to-back pairs (order alternating), so slow drift in the machine's load cancels in each pair's ratio."""
    start, end = 10, config.iters - 10
    rates: dict[str, list[float]] = {"lem": [], "cli": [], "ours": []}
    ours = run_ours(config)  # reference tokens and losses; also warms the kernel cache
    tokens = {i: tok for i, (_, tok) in ours["points"].items()}  # same batches, so the same tokens
    cli: dict[int, tuple[float, float, float]] = {}
    for r in range(repeats):
        sides = ["cli", "lem"] if r % 2 == 0 else ["lem", "cli"]
        for side in sides:
            if side == "cli":
                cli = run_mlx_cli(config, workdir)
                rates["cli"].append(window_rate({i: (t, tokens[i]) for i, (t, _, _) in cli.items()}, start, end))
            else:
                lem = run_lem_cli(config, workdir)
                rates["lem"].append(window_rate({i: (t, tokens[i]) for i, t in lem.items()}, start, end))
        if in_process:
            run = run_ours(config)
            rates["ours"].append(window_rate(run["points"], start, end))
    # Same batches? The CLI prints each report window's mean loss (3 decimals) and tokens (0.1k).
    worst = 0.0
    for it, (_, loss, tok_k) in cli.items():
        window = range(it - config.steps_per_report + 1, it + 1)
        worst = max(worst, abs(sum(ours["losses"][i] for i in window) / len(window) - loss))
        assert abs(ours["points"][it][1] / 1000 - tok_k) <= 0.051, (it, ours["points"][it][1], tok_k)
    pairs = sorted(a / b for a, b in zip(rates["lem"], rates["cli"]))
    median = pairs[len(pairs) // 2] if len(pairs) % 2 else (pairs[len(pairs) // 2 - 1] + pairs[len(pairs) // 2]) / 2
    best = {k: max(v) if v else 0.0 for k, v in rates.items()}
    return {"model": name, **best, "ratio": median, "pairs": pairs, "best_ratio": best["lem"] / best["cli"],
            "inproc_ratio": best["ours"] / best["cli"] if rates["ours"] else None, "all": rates,
            "loss_diff": worst, "estimate": ours["estimate"], "peak": ours["peak"]}


def resume_check(model: Path, data: Path, workdir: Path) -> float:
    """Compiled path: 2N steps == N steps, cancel, resume N (dropout, schedule and epochs included)."""
    from lemcore.errors import Cancelled
    from lemcore.jobs import CancelToken
    from lemcore.train.config import TrainConfig
    from lemcore.train.engine import resume_config, train_lora
    from lemcore.train.events import TrainStep

    n = 8
    base = TrainConfig(model=str(model), data=str(data), num_layers=-1, iters=2 * n, batch_size=4,
                       learning_rate=1e-3, lora_dropout=0.1, lr_schedule="cosine", warmup_steps=2,
                       steps_per_eval=5, save_every=5, val_batches=1, mask_prompt=True)
    whole: list[float] = []
    train_lora(base.with_changes(adapter_path=str(workdir / "r-whole")),
               report=lambda e: whole.append(e.train_loss) if isinstance(e, TrainStep) else None)
    cancel = CancelToken()
    split: list[float] = []

    def report(e: Any) -> None:
        if isinstance(e, TrainStep):
            split.append(e.train_loss)
            if e.iteration == n:
                cancel.cancel()

    try:
        train_lora(base.with_changes(adapter_path=str(workdir / "r-split")), report=report, cancel=cancel)
    except Cancelled:
        pass
    train_lora(resume_config(workdir / "r-split"),
               report=lambda e: split.append(e.train_loss) if isinstance(e, TrainStep) else None)
    assert len(split) == len(whole) == 2 * n
    return max(abs(a - b) for a, b in zip(whole, split))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=200, help="iterations on the tiny model")
    parser.add_argument("--smollm2-iters", type=int, default=30, help="iterations on SmolLM2 (seconds each)")
    parser.add_argument("--words", type=int, default=24, help="words per example (about 1.5 tokens each)")
    parser.add_argument("--repeats", type=int, default=4, help="pairs of runs per model")
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    from lemcore.train.config import TrainConfig
    from tests.tiny_models import make_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="lem-bench-train-"))
    batch = 2
    models: list[tuple[str, Path, int, float, int]] = []
    if "tiny" in args.models:
        models.append(("tiny llama (h64, 2 layers)", make_tiny_model(workdir / "tiny"), -1, 1e-4, args.iters))
    if "smollm2" in args.models:
        try:
            from lemcore.models.embedded import ensure_embedded_model

            models.append(("SmolLM2-135M float32", ensure_embedded_model(), 16, 1e-5, args.smollm2_iters))
        except Exception as err:  # noqa: BLE001 - report and go on with what can run
            print(f"SmolLM2 skipped: {type(err).__name__}: {err}")
    results = []
    for name, path, layers, lr, iters in models:
        data = make_data(workdir / f"data-{iters}", iters * batch, args.words)
        config = TrainConfig(model=str(path), data=str(data), adapter_path=str(workdir / "adapters"),
                             num_layers=layers, batch_size=batch, iters=iters, learning_rate=lr,
                             mask_prompt=True, steps_per_report=10, steps_per_eval=10_000, val_batches=1,
                             save_every=10_000, max_seq_length=2048, seed=0)
        print(f"{name}: {config.command_line()}", flush=True)
        results.append(compare(name, config, args.repeats, workdir, in_process=iters >= 100))
        r = results[-1]
        for key, label in (("lem", "lem train"), ("cli", "mlx_lm lora"), ("ours", "train_lora in process")):
            if r["all"][key]:
                print(f"  {label:<22} best {r[key]:8.1f} tok/s  (runs "
                      f"{', '.join(f'{x:.1f}' for x in r['all'][key])})")
        inproc = f"; in process, best vs best {r['inproc_ratio']:.3f}" if r["inproc_ratio"] else ""
        print(f"  lem train / mlx_lm lora: median of paired runs {r['ratio']:.3f} (pairs "
              f"{', '.join(f'{x:.3f}' for x in r['pairs'])}), best vs best {r['best_ratio']:.3f}{inproc}", flush=True)
        print(f"  same batches: max window-loss difference {r['loss_diff']:.4f}; memory estimate "
              f"{r['estimate']:.2f} GB, measured MLX peak {r['peak']:.2f} GB", flush=True)
    if "tiny" in args.models:
        drift = resume_check(make_tiny_model(workdir / "tiny-resume"), make_data(workdir / "resume-data", 10),
                             workdir)
        print(f"Resume equivalence on the compiled path: max |loss difference| over 16 steps = {drift:.2e}")
    print(f"\nOpenBLAS preloaded: {'openblas' in os.environ.get('LD_PRELOAD', '')}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("model                        lem train tok/s   mlx_lm lora tok/s   ratio (median of pairs)")
    for r in results:
        print(f"{r['model']:<28} {r['lem']:>15.1f}   {r['cli']:>17.1f}   {r['ratio']:.3f}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r["ratio"] >= 0.95 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
