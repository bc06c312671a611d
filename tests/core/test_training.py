"""The LoRA engine for real on a tiny model: learning, events, cancel, true resume, guards, CLI, Influx."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lemcore.errors import Cancelled, ConfigError, DataError, ModelFitError, ModelLoadError
from lemcore.jobs import CancelToken
from lemcore.train.config import TrainConfig
from lemcore.train.engine import resume_config, train_lora
from lemcore.train.events import CheckpointSaved, EvalDone, TrainFinished, TrainStarted, TrainStep
from lemcore.train.resume import TrainingDiverged

REPLY = "The volunteers meet every Saturday morning in the old library."
NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kai", "Lia"]


@pytest.fixture(scope="module", autouse=True)
def _uncompiled(uncompiled_mlx: None) -> None:
    """Training tests run with mx.compile off (see tests/conftest.py)."""


def chat(prompt: str, reply: str = REPLY) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def write_split(folder: Path, name: str, rows: list[Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    (folder / f"{name}.jsonl").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def memo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every answer is the same sentence: memorisable, and the held-out prompts share it."""
    folder = tmp_path_factory.mktemp("memo")
    write_split(folder, "train", [chat(f"Who meets on Saturday, {n}?") for n in NAMES[:8]])
    write_split(folder, "valid", [chat(f"Who meets on Saturday, {n}?") for n in NAMES[8:]])
    return folder


def config(model: Path, data: Path, run: Path, **changes: Any) -> TrainConfig:
    base = dict(model=str(model), data=str(data), adapter_path=str(run), num_layers=-1, batch_size=2,
                learning_rate=1e-3, mask_prompt=True, val_batches=-1, steps_per_eval=10, save_every=10, iters=30)
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def trained(tiny_llama: Path, memo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("trained") / "run"
    events: list[Any] = []
    result = train_lora(config(tiny_llama, memo_data, run), report=events.append)
    return {"result": result, "events": events, "run": run}


def test_validation_loss_falls_substantially(trained: dict[str, Any]) -> None:
    evals = [e for e in trained["events"] if isinstance(e, EvalDone)]
    assert [e.iteration for e in evals] == [0, 10, 20, 30]
    assert evals[-1].val_loss < 0.5 * evals[0].val_loss, [e.val_loss for e in evals]
    result = trained["result"]
    assert result.status == "complete" and result.iterations == 30
    assert result.best_iteration == 30 and result.val_loss == evals[-1].val_loss


def test_an_event_every_step_with_all_metrics(trained: dict[str, Any]) -> None:
    events = trained["events"]
    assert isinstance(events[0], TrainStarted) and isinstance(events[-1], TrainFinished)
    steps = [e for e in events if isinstance(e, TrainStep)]
    assert [s.iteration for s in steps] == list(range(1, 31))
    last = steps[-1]
    assert last.total_iters == 30 and last.learning_rate == pytest.approx(1e-3)
    assert last.tokens_per_second > 0 and last.iterations_per_second > 0 and last.peak_memory_gb > 0
    assert last.trained_tokens == trained["result"].trained_tokens > 0
    assert last.eta_seconds == 0 and steps[0].eta_seconds > 0 and last.epoch == pytest.approx(7.5)
    assert steps[15].val_loss == next(e.val_loss for e in events if isinstance(e, EvalDone) and e.iteration == 10)
    saved = [(e.iteration, e.reason) for e in events if isinstance(e, CheckpointSaved) and e.reason != "best"]
    assert saved == [(10, "periodic"), (20, "periodic"), (30, "final")]


def test_run_folder_is_complete_and_mlx_lm_loads_the_adapter(trained: dict[str, Any], tiny_llama: Path) -> None:
    from mlx_lm import load

    from lemcore.train.config import load_yaml
    from lemcore.train.run import read_metrics

    run: Path = trained["run"]
    for name in ("config.yaml", "adapter_config.json", "adapters.safetensors", "metrics.jsonl",
                 "checkpoints/0000010/optimizer.safetensors", "checkpoints/0000030/state.json",
                 "best/adapters.safetensors"):
        assert (run / name).is_file(), name
    assert load_yaml(run / "config.yaml").iters == 30
    records = read_metrics(run)
    assert sum(r["type"] == "train" for r in records) == 30 and records[-1]["type"] == "finished"
    for adapter in (run, run / "best"):
        model, _ = load(str(tiny_llama), adapter_path=str(adapter))
        assert model is not None


def test_engine_prints_nothing(tiny_llama: Path, memo_data: Path, tmp_path: Path,
                               capfd: pytest.CaptureFixture[str]) -> None:
    train_lora(config(tiny_llama, memo_data, tmp_path / "quiet", iters=3, steps_per_eval=2, save_every=2))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def _losses(events: list[Any]) -> list[float]:
    return [e.train_loss for e in events if isinstance(e, TrainStep)]


def test_cancel_stops_within_a_step_and_resume_continues_the_same_curve(
        tiny_llama: Path, memo_data: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    # Dropout, warm-up + cosine schedule, Adam and 2 batches per epoch: weights alone would not resume this.
    n = 6
    settings = dict(iters=2 * n, batch_size=3, lora_dropout=0.2, lr_schedule="cosine", warmup_steps=2,
                    steps_per_eval=4, save_every=4)
    whole: list[Any] = []
    train_lora(config(tiny_llama, memo_data, tmp_path / "whole", **settings), report=whole.append)

    cancel = CancelToken()
    first: list[Any] = []

    def report(event: Any) -> None:
        first.append(event)
        if isinstance(event, TrainStep) and event.iteration == n:
            cancel.cancel()

    with pytest.raises(Cancelled, match=f"iteration {n}"):
        train_lora(config(tiny_llama, memo_data, tmp_path / "split", **settings), report=report, cancel=cancel)
    assert max(e.iteration for e in first if isinstance(e, TrainStep)) == n  # stopped within one step
    assert any(isinstance(e, CheckpointSaved) and (e.iteration, e.reason) == (n, "cancel") for e in first)
    assert isinstance(first[-1], TrainFinished) and first[-1].status == "cancelled"

    second: list[Any] = []
    result = train_lora(resume_config(tmp_path / "split"), report=second.append)
    assert [e.iteration for e in second if isinstance(e, TrainStep)] == list(range(n + 1, 2 * n + 1))
    assert _losses(first) + _losses(second) == pytest.approx(_losses(whole), rel=1e-5)
    evals = [(e.iteration, e.val_loss) for e in first + second if isinstance(e, EvalDone)]
    assert evals == [(e.iteration, pytest.approx(e.val_loss, rel=1e-5)) for e in whole if isinstance(e, EvalDone)]
    a = mx.load(str(tmp_path / "whole" / "adapters.safetensors"))
    b = mx.load(str(result.adapter_file))
    assert a.keys() == b.keys()
    assert all(mx.allclose(a[k], b[k], rtol=1e-5, atol=1e-7).item() for k in a)


def test_cancel_with_gradient_accumulation_waits_for_the_update(tiny_llama: Path, memo_data: Path,
                                                               tmp_path: Path) -> None:
    cancel = CancelToken()
    events: list[Any] = []

    def report(event: Any) -> None:
        events.append(event)
        if isinstance(event, TrainStep) and event.iteration == 3:
            cancel.cancel()

    with pytest.raises(Cancelled, match="iteration 4"):
        train_lora(config(tiny_llama, memo_data, tmp_path / "acc", iters=8, grad_accumulation_steps=2,
                          save_every=2, steps_per_eval=4), report=report, cancel=cancel)
    assert max(e.iteration for e in events if isinstance(e, TrainStep)) == 4
    assert [(e.iteration, e.reason) for e in events if isinstance(e, CheckpointSaved) and e.reason != "best"] \
        == [(2, "periodic"), (4, "periodic")]  # the stop reuses the checkpoint of that iteration


def test_resume_refuses_changed_training_settings(tiny_llama: Path, memo_data: Path, tmp_path: Path) -> None:
    train_lora(config(tiny_llama, memo_data, tmp_path / "r", iters=2, save_every=2, steps_per_eval=2))
    with pytest.raises(ConfigError, match="already reached iteration 2 of 2"):
        train_lora(resume_config(tmp_path / "r"))
    with pytest.raises(ConfigError, match=r"learning_rate: 0.001 in the run, 0.01 now"):
        train_lora(resume_config(tmp_path / "r", iters=4, learning_rate=1e-2))
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        resume_config(tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_lora(config(tiny_llama, memo_data, tmp_path / "r"))


def test_early_stopping_keeps_the_best_adapter(tiny_llama: Path, memo_data: Path, tmp_path: Path) -> None:
    events: list[Any] = []
    # Nothing counts as better after the first measurement: patience 2 stops at the second eval after it.
    result = train_lora(config(tiny_llama, memo_data, tmp_path / "es", iters=20, steps_per_eval=2,
                               early_stopping_patience=2, early_stopping_min_delta=100.0), report=events.append)
    assert result.status == "early_stopped" and result.iterations == 4
    assert result.best_iteration == 0 and result.best_adapter_dir is not None
    assert json.loads((result.best_adapter_dir / "best.json").read_text())["iteration"] == 0
    assert events[-1].status == "early_stopped" and "Stopped early at iteration 4" in events[-1].message


def test_watchdog_stops_a_nan_loss_with_a_clear_message(tiny_llama: Path, tmp_path: Path) -> None:
    data = tmp_path / "nan"
    long_prompt = "Please explain, slowly and with care, why the volunteers always meet on Saturday mornings?"
    write_split(data, "train", [chat("Hi?", "Yes."), chat(long_prompt, "Yes.")])
    events: list[Any] = []
    with pytest.raises(TrainingDiverged, match="loss is NaN because that batch had no tokens to train on"):
        train_lora(config(tiny_llama, data, tmp_path / "run", batch_size=1, max_seq_length=24, iters=6),
                   report=events.append)
    assert events[-1].status == "diverged" and events[-1].iteration <= 2


def test_watchdog_rules() -> None:
    from lemcore.train.resume import RunState, check_loss

    cfg = TrainConfig(learning_rate=0.5)
    state = RunState()
    for i in range(1, 6):
        check_loss(state, i, 2.0, 4.0, cfg, None)
    check_loss(state, 6, 7.9, 4.0, cfg, None)
    with pytest.raises(TrainingDiverged, match=r"exploded to 8.5, over 4x its starting value 2.*\(0.5\)"):
        check_loss(state, 7, 8.5, 4.0, cfg, 5)
    with pytest.raises(TrainingDiverged, match="became NaN.*resume from checkpoint 5"):
        check_loss(state, 8, float("nan"), 4.0, cfg, 5)


def test_bad_model_layers_and_data_are_clear(tiny_llama: Path, memo_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Layers is 16 but this model has only 2. Use -1"):
        train_lora(config(tiny_llama, memo_data, tmp_path / "a", num_layers=16))
    with pytest.raises(ConfigError, match="missing-model does not exist"):
        train_lora(config(tmp_path / "missing-model", memo_data, tmp_path / "b"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelLoadError, match="not-a-model"):
        train_lora(config(tmp_path / "not-a-model", memo_data, tmp_path / "b"))
    bad = tmp_path / "bad"
    write_split(bad, "train", [chat("a"), chat("b")])
    write_split(bad, "valid", [chat("c"), chat("d"), '{"messages": [{"role": "user", "content": "e"}]}'])
    with pytest.raises(DataError, match="valid.jsonl line 3: no assistant message"):
        train_lora(config(tiny_llama, bad, tmp_path / "c"))


def test_memory_guard_refuses_before_loading_weights(tiny_llama: Path, memo_data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lemcore.train import engine as training

    monkeypatch.setattr(training, "usable_bytes", lambda: 1)
    cfg = config(tiny_llama, memo_data, tmp_path / "m", batch_size=4)
    with pytest.raises(ModelFitError, match="needs about .* GB of memory at its peak.*No setting change fits"):
        train_lora(cfg)
    train_lora(cfg.with_changes(memory_guard=False, iters=1))


def test_memory_estimate_and_suggestions_for_a_large_model() -> None:
    from lemcore.hardware import GB
    from lemcore.train.memory import ModelShape, check_fits, estimate_peak

    # Gemma 3 12B, 4-bit: the lab measured 11.5 GB with gradient checkpointing (docs/lab-formats.md, "Training recipe").
    shape = ModelShape(hidden_size=3840, num_layers=48, intermediate_size=15360, vocab_size=262144,
                       num_heads=16, weight_bytes=int(7.9 * GB), activation_bytes=2)
    recipe = TrainConfig(batch_size=2, num_layers=16, grad_checkpoint=True)
    assert 10 < estimate_peak(shape, recipe, 760).total_gb < 14
    no_ckpt = recipe.with_changes(grad_checkpoint=False)
    assert estimate_peak(shape, no_ckpt, 760).total > estimate_peak(shape, recipe, 760).total
    with pytest.raises(ModelFitError) as info:
        check_fits(shape, no_ckpt, 760, int(12.5 * GB))
    message = str(info.value)
    assert "only 12.5 GB is free" in message and "turn on gradient checkpointing (about" in message
    assert check_fits(shape, recipe, 760, int(14 * GB)).total_gb < 14


def test_cli_train_prints_progress_and_errors_without_traceback(
        tiny_llama: Path, memo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.main import main

    args = ["train", "--model", str(tiny_llama), "--data", str(memo_data), "--num-layers", "-1",
            "--batch-size", "2", "--iters", "4", "--steps-per-report", "2", "--steps-per-eval", "4",
            "--learning-rate", "1e-3", "--mask-prompt", "--adapter-path", str(tmp_path / "cli")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Iter 2/4: train loss" in out and "Iter 4: val loss" in out and "Finished 4 iterations." in out
    assert main(args[:-2] + ["--adapter-path", str(tmp_path / "x"), "--batch-size", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "Error: Batch size must be at least 1." and "Traceback" not in captured.err
    assert main(["train", "--resume", str(tmp_path / "cli"), "--iters", "6"]) == 0
    assert "Resuming" in capsys.readouterr().out


def test_influx_gets_the_labs_shape_and_a_dead_server_never_blocks(
        tiny_llama: Path, memo_data: Path, tmp_path: Path, influx: Any) -> None:
    from lemcore.influx import InfluxClient, InfluxTarget
    from lemcore.train.influx import InfluxTrainReporter
    from tests.servers import free_port

    client = InfluxClient(InfluxTarget(influx.url, influx.db), influx.token)
    reporter = InfluxTrainReporter(client, model=str(tiny_llama), run_id="lem-test-run", every=2)
    train_lora(config(tiny_llama, memo_data, tmp_path / "i", iters=4, steps_per_eval=2), report=reporter)
    reporter.close()
    status = client.query("SELECT status, iteration, total_iters, pct FROM training_status WHERE "
                          "time > now() - 1h AND run_id = 'lem-test-run'")
    assert [r["status"] for r in status] == ["training", "complete"] and status[-1]["total_iters"] == 4
    losses = client.query("SELECT * FROM training_loss WHERE time > now() - 1h")
    train_rows = [r for r in losses if r["loss_type"] == "train"]
    assert [r["iteration"] for r in train_rows] == [2, 4] and train_rows[0]["tokens_per_sec"] > 0
    assert sorted(r["iteration"] for r in losses if r["loss_type"] == "val") == [0, 2, 4]
    assert train_rows[0]["model"] == tiny_llama.name

    dead = InfluxClient(InfluxTarget(f"http://127.0.0.1:{free_port()}", "training"), "tok", timeout=2)
    reporter = InfluxTrainReporter(dead, model="m", every=1)
    slowest = 0.0

    def timed(event: Any) -> None:
        nonlocal slowest
        tic = time.perf_counter()
        reporter(event)
        slowest = max(slowest, time.perf_counter() - tic)

    result = train_lora(config(tiny_llama, memo_data, tmp_path / "d", iters=4, steps_per_eval=2), report=timed)
    reporter.close(timeout=1)
    assert result.status == "complete" and slowest < 0.05 and reporter.failures >= 1


def test_a_checkpoint_cut_short_is_never_resumed_from(trained: dict[str, Any], tmp_path: Path) -> None:
    """A process killed while saving (e.g. a machine of a multi-machine run lost) leaves `<iteration>.tmp`
    behind, with or without its state file: resuming takes the last finished checkpoint."""
    import shutil

    from lemcore.train.resume import find_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    half = run / "checkpoints" / "0000040.tmp"
    shutil.copytree(run / "checkpoints" / "0000030", half)
    (half / "adapters.safetensors").write_bytes(b"cut")
    checkpoint = find_checkpoint(run)
    assert checkpoint.path.name == "0000030" and checkpoint.iteration == 30
