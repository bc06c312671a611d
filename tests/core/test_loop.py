"""The LEK loop: gold -> dataset -> train -> fuse -> bench base and trained -> compare, resumable, one at a time."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lemcore.benchmarks import store
from lemcore.cli.main import main
from lemcore.errors import Cancelled, ConfigError
from lemcore.events import Event
from lemcore.jobs import CancelToken
from lemcore.loop.config import EXAMPLE, loop_config, to_spec
from lemcore.loop.engine import LOCK_FILE, _exclusive, read_loop, resume_loop, run_loop
from lemcore.loop.events import LoopFinished, LoopStage, LoopStarted
from lemcore.models.catalog import EMBEDDED_ID
from lemcore.settings import data_dir
from lemcore.train.events import TrainStarted, TrainStep
from tests.bench_items import write_gsm8k


@pytest.fixture(scope="module", autouse=True)
def _uncompiled(uncompiled_mlx: None) -> None:
    """Training runs with mx.compile off (see tests/conftest.py)."""


# -- the spec -------------------------------------------------------------------------------------------
def test_defaults_are_the_labs_method_on_the_built_in_model() -> None:
    config = loop_config({})
    assert config.base_model == EMBEDDED_ID
    assert config.stages() == ("dataset", "train", "fuse", "bench_base", "bench_trained", "compare")
    assert config.train.iters == 200 and config.train.mask_prompt  # the lab's recipe
    assert config.data.prompt_policy == "plain" and config.adapter == "best"
    assert loop_config({"gold": {"count": 3}}).stages()[0] == "gold"


def test_the_example_file_is_a_valid_loop_and_specs_round_trip() -> None:
    config = loop_config(yaml.safe_load(EXAMPLE))
    assert config.gold.count == 40 and [s.id for s in config.bench.suites] == ["gsm8k", "ethics"]
    assert config.bench.suites[1].n == 20
    assert loop_config(to_spec(config)) == config
    # PyYAML reads 1e-5 as text: it is still a learning rate.
    assert loop_config(yaml.safe_load("train: {learning_rate: 1e-5}")).train.learning_rate == 1e-5


@pytest.mark.parametrize(("spec", "words"), [
    ({"trian": {}}, "Unknown setting in 'the loop file': trian"),
    ({"train": {"iters": 0}}, "train.iters"),
    ({"train": {"model": "x"}}, "set by the loop itself"),
    ({"train": {"preset": "fast"}}, "train.preset"),
    ({"bench": {"suites": ["gsm8k", "mmlu"]}}, "Unknown benchmark suite 'mmlu'"),
    ({"bench": {"suites": []}}, "bench.suites is empty"),
    ({"gold": {"count": -1}}, "gold.count must be at least 0"),
    ({"gold": {"count": "many"}}, "gold.count must be a whole number"),
    ({"fuse": {"adapter": "last"}}, "fuse.adapter"),
    ({"data": {"folder": "/x", "sources": ["a.jsonl"]}}, "data.folder uses a training set built before"),
])
def test_bad_specs_name_the_setting(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(".", r"\.")):
        loop_config(spec)


# -- the whole loop on a tiny model -----------------------------------------------------------------------
def _spec(model: Path, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "base_model": str(model),
        "folder": str(tmp_path / "loop"),
        "gold": {"count": 12, "max_tokens": 12, "batch_size": 4},
        # A random model writes noise: keep it, or there is nothing to train on.
        "data": {"gate": False, "keep_truncated": True},
        "train": {"preset": "Quick test", "iters": 4, "batch_size": 2, "num_layers": -1, "save_every": 2,
                  "steps_per_eval": 2, "val_batches": 1, "learning_rate": 1e-3, "mask_prompt": False},
        "bench": {"suites": [{"id": "gsm8k", "path": str(write_gsm8k(tmp_path / "gsm8k.jsonl", count=3))}],
                  "samples": 1, "max_tokens": 8, "batch_size": 3},
    }
    spec.update(changes)
    return spec


def test_the_whole_loop_runs_and_resumes_after_a_stop(tiny_llama: Path, tmp_path: Path) -> None:
    config = loop_config(_spec(tiny_llama, tmp_path))
    events: list[Event] = []
    cancel = CancelToken()

    def stop_in_training(event: Event) -> None:
        events.append(event)
        if isinstance(event, TrainStep) and event.iteration >= 3:
            cancel.cancel()

    with pytest.raises(Cancelled):
        run_loop(config, report=stop_in_training, cancel=cancel)
    state = read_loop(tmp_path / "loop")
    assert [state["stages"][s]["state"] for s in ("gold", "dataset", "train")] == ["done", "done", "running"]
    gold = [json.loads(line) for line in (tmp_path / "loop" / "gold" / "gold.jsonl").read_text().splitlines()]
    assert len(gold) == 12 and len({g["idx"] for g in gold}) == 12
    assert (tmp_path / "loop" / "data" / "train.jsonl").is_file()
    assert (tmp_path / "loop" / "data" / "DATA_CARD.md").is_file()

    events.clear()
    result = resume_loop(tmp_path / "loop", report=events.append)
    started = next(e for e in events if isinstance(e, LoopStarted))
    assert started.done == ("gold", "dataset")  # finished stages are not run again
    assert [e.stage for e in events if isinstance(e, LoopStage) and e.state == "started"] == \
        ["train", "fuse", "bench_base", "bench_trained", "compare"]
    train = next(e for e in events if isinstance(e, TrainStarted))
    assert train.resumed and train.start_iteration >= 2  # from its checkpoint, not step 0
    assert isinstance(events[-1], LoopFinished)

    assert (result.fused_model / "config.json").is_file()
    assert result.train_run.parent.name == "runs"  # with the other runs: the Train page lists it
    runs = {Path(r["path"]) for r in store.list_runs()}
    assert {result.base_run, result.trained_run} <= runs  # the Results page lists both
    assert [row.suite for row in result.comparison.rows][0] == "gsm8k"
    assert result.comparison.rows[0].difference is not None  # paired over the same items
    text = (result.folder / "comparison.txt").read_text()
    assert "GSM8K" in text
    # The gold file gained nothing on resume: no prompt answered twice.
    assert len((tmp_path / "loop" / "gold" / "gold.jsonl").read_text().splitlines()) == 12

    # Running it again is cheap: everything is done, the comparison is made again from the runs.
    events.clear()
    again = run_loop(config, report=events.append)
    assert again.base_run == result.base_run
    assert [e.stage for e in events if isinstance(e, LoopStage) and e.state == "started"] == ["compare"]


def test_a_loop_killed_mid_training_resumes_from_its_last_checkpoint(tiny_llama: Path, tmp_path: Path) -> None:
    """A crash (or a laptop whose battery dies): `lem loop` is killed with SIGKILL while training. The lock goes
    with the process, and the loop continues from the run's last periodic checkpoint, not from step 0."""
    spec = _spec(tiny_llama, tmp_path, gold={"count": 0},
                 data={"sources": [str(_lab_answers(tmp_path))], "gate": False, "split": "domain"})
    spec["train"].update(iters=400, save_every=2, steps_per_eval=1000)
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = ("import mlx.core as mx; mx.disable_compile()\n"  # as the fixture does: no minutes of JIT
            "from lemcore.cli.main import main\n"
            f"main(['loop', '-c', {str(path)!r}])")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        checkpoints: list[Path] = []
        while time.monotonic() < deadline and child.poll() is None:
            checkpoints = sorted((data_dir() / "runs").glob("loop-*/checkpoints/[0-9]*/state.json"))
            if len(checkpoints) >= 2:
                break
            time.sleep(0.2)
        assert len(checkpoints) >= 2, "training never saved two checkpoints"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    state = read_loop(tmp_path / "loop")
    assert state["stages"]["train"]["state"] == "running"

    events: list[Event] = []
    config = loop_config({**spec, "train": {**spec["train"], "iters": 400}})
    cancel = CancelToken()

    def stop_soon(event: Event) -> None:
        events.append(event)
        if isinstance(event, TrainStep):
            cancel.cancel()  # one step proves where it restarted; the test need not train 400 steps

    with pytest.raises(Cancelled):
        run_loop(config, report=stop_soon, cancel=cancel)
    started = next(e for e in events if isinstance(e, TrainStarted))
    assert started.resumed and started.start_iteration >= 2


def test_a_loop_folder_with_other_settings_or_in_use_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "loop"
    folder.mkdir()
    config = loop_config(_spec(tiny_llama, tmp_path, gold={"count": 0},
                               data={"folder": str(tmp_path / "nothing-here")}))
    # Another process (a second copy of the app, or `lem loop`) holds the folder.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from lemcore.loop.engine import _exclusive\n"
                               f"with _exclusive(__import__('pathlib').Path({str(folder)!r})):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="already running"):
            run_loop(config)
    finally:
        holder.kill()
        holder.communicate()  # also closes its pipe
    assert (folder / LOCK_FILE).exists()
    with _exclusive(folder):  # the OS let go of the lock with the process
        pass

    (folder / "loop.json").write_text(json.dumps({"format": 1, "spec": {**to_spec(config), "base_model": "other"},
                                                  "stages": {}}))
    with pytest.raises(ConfigError, match="other base_model settings"):
        run_loop(config)


def test_a_full_disk_is_said_in_words_and_the_loop_continues_later(tiny_llama: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from lemcore.errors import StorageError

    config = loop_config(_spec(tiny_llama, tmp_path, gold={"count": 0},
                               data={"sources": [str(_lab_answers(tmp_path))], "gate": False, "split": "domain"}))
    real = store.write_json
    full = {"on": False}

    def write_json(path: Path, obj: Any) -> None:
        if full["on"] and path.name == "loop.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(store, "write_json", write_json)

    def fill_disk_in_training(event: Event) -> None:
        if isinstance(event, TrainStep) and event.iteration >= 2:
            full["on"] = True  # the stage's end cannot be recorded

    with pytest.raises(StorageError, match="disk holding .*loop.json is full"):
        run_loop(config, report=fill_disk_in_training)
    full["on"] = False  # space freed
    result = run_loop(config)  # continues: training had finished, so only its record was missing
    assert result.comparison.rows and (result.fused_model / "config.json").is_file()


def _lab_answers(tmp_path: Path) -> Path:
    """Answers in the lab's gold format: a loop without a gold step reads these."""
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"idx": i, "seed_id": f"S{i % 4}", "domain": "Ethics", "prompt": f"Q{i}?",
                                           "response": f"A considered answer number {i}."}) + "\n"
                               for i in range(30)))
    return answers


def test_cli_runs_a_loop_from_a_yaml_file(tiny_llama: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tiny_llama, tmp_path, gold={"count": 0},
                 data={"sources": [str(_lab_answers(tmp_path))], "gate": False, "split": "domain"})
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["loop", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "== Train" in out and "== Benchmark the trained model" in out and "GSM8K" in out
    assert main(["loop", "--list"]) == 0
    assert main(["loop", "--example"]) == 0
    assert "base_model:" in capsys.readouterr().out


def test_the_whole_loop_on_the_built_in_model(tmp_path: Path) -> None:
    """The real instruct model, end to end: gold answers with the sandwich, a dataset, 2 steps, fuse, both
    benchmarked on the same GSM8K items, compared."""
    spec = _spec(Path(EMBEDDED_ID), tmp_path, base_model=EMBEDDED_ID,
                 gold={"count": 8, "max_tokens": 16, "batch_size": 8})
    spec["train"].update(iters=2, batch_size=1, steps_per_eval=2, learning_rate=1e-5, num_layers=2)
    spec["bench"]["max_tokens"] = 16
    stages: list[str] = []
    result = run_loop(loop_config(spec), report=lambda e: stages.append(e.stage)
                      if isinstance(e, LoopStage) and e.state == "done" else None)
    assert stages == ["gold", "dataset", "train", "fuse", "bench_base", "bench_trained", "compare"]
    card = json.loads((result.dataset / "data_card.json").read_text())
    assert sum(card["examples"].values()) == 8
    fused = json.loads((result.fused_model / "config.json").read_text())
    assert fused["model_type"] == "llama"
    row = result.comparison.rows[0]
    assert row.suite == "gsm8k" and row.difference is not None
    assert store.read_run(result.base_run)["label"].startswith(f"Before training ({EMBEDDED_ID}, loop ")
    assert store.read_run(result.trained_run)["label"].startswith(f"After training ({EMBEDDED_ID}, loop ")
