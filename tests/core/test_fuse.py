"""Fuse: adapter + base -> a standalone folder that mlx_lm.load loads, with logits matching base+adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lemcore.errors import ConfigError
from lemcore.train.config import TrainConfig
from lemcore.train.engine import train_lora
from lemcore.train.fuse import FuseConfig, FuseMismatch, FuseStage, choose_adapter, fuse_adapter


@pytest.fixture(scope="module", autouse=True)
def _uncompiled(uncompiled_mlx: None) -> None:
    """Training tests run with mx.compile off (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fuse-data")
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": "The volunteers meet on Saturday."}]} for i in range(6)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run = tmp_path_factory.mktemp("fuse-run") / "run"
    train_lora(TrainConfig(model=str(tiny_llama), data=str(data), adapter_path=str(run), num_layers=-1, iters=6,
                           batch_size=2, learning_rate=1e-2, save_every=6))
    return run


@pytest.fixture(scope="module")
def quantized(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlx_lm.convert import convert

    def build(bits: int) -> Path:
        dest = tmp_path_factory.mktemp(f"q{bits}") / "model"
        convert(str(tiny_llama), str(dest), quantize=True, q_group_size=32, q_bits=bits)
        return dest

    return build


def _logits(model: Any, ids: list[int]) -> Any:
    import mlx.core as mx
    import numpy as np

    return np.array(model(mx.array(ids)[None]).astype(mx.float32))


def test_fused_float_model_loads_and_matches_base_plus_adapter(adapter: Path, tiny_llama: Path,
                                                              tmp_path: Path) -> None:
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    stages: list[str] = []
    result = fuse_adapter(FuseConfig(adapter_path=str(adapter), save_path=str(tmp_path / "fused")),
                          report=lambda e: stages.append(e.stage) if isinstance(e, FuseStage) else None)
    assert stages == ["loading", "measuring", "fusing", "saving", "checking"]
    assert result.check.passed and result.check.relative_diff < 1e-5 and result.check.top1_agreement == 1.0
    assert result.base_model == str(tiny_llama) and not result.quantized
    weights = mx.load(str(tmp_path / "fused" / "model.safetensors"))
    assert not any("lora" in k for k in weights)
    # Independently of the engine's own check: the fused folder alone reproduces base + adapter.
    fused, tokenizer = load(str(tmp_path / "fused"))
    reference, _ = load(str(tiny_llama), adapter_path=str(adapter))
    ids = tokenizer.encode("Who meets on Saturday?")
    assert np.allclose(_logits(fused, ids), _logits(reference, ids), atol=1e-4)
    base, _ = load(str(tiny_llama))
    assert not np.allclose(_logits(base, ids), _logits(reference, ids), atol=1e-2)  # the adapter matters
    provenance = json.loads((tmp_path / "fused" / "lem_fuse.json").read_text())
    assert provenance["check"]["passed"] is True
    # This run had no validation data, so no best adapter: the final one was fused, and that is said.
    assert provenance["adapter"]["requested"] == "best" and provenance["adapter"]["fused"] == "final"
    assert provenance["adapter"]["iteration"] == 6 and "no best adapter" in provenance["adapter"]["note"]
    assert result.adapter is not None and result.adapter.describe().startswith("the final adapter (step 6)")


def test_quantized_base_stays_quantized_or_dequantizes(adapter: Path, quantized: Any, tmp_path: Path) -> None:
    base = quantized(8)
    kept = fuse_adapter(FuseConfig(adapter_path=str(adapter), model=str(base), save_path=str(tmp_path / "q")))
    assert kept.quantized and kept.check.passed and kept.check.tolerance > 1e-3, kept.check
    assert "quantization" in json.loads((tmp_path / "q" / "config.json").read_text())
    flat = fuse_adapter(FuseConfig(adapter_path=str(adapter), model=str(base), save_path=str(tmp_path / "f"),
                                   dequantize=True))
    assert not flat.quantized and flat.check.relative_diff < 1e-5
    assert "quantization" not in json.loads((tmp_path / "f" / "config.json").read_text())


def test_a_quantized_fuse_that_loses_the_adapter_says_why(adapter: Path, quantized: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from lemcore.train import fuse

    real = fuse._compare
    monkeypatch.setattr(fuse, "_compare", lambda *a: real(a[0], a[1], a[0], a[3], a[4]))  # as if rounded away
    with pytest.raises(FuseMismatch, match="misses 100.0%.*Re-quantizing the fused weights to 8 bits rounds away"):
        fuse_adapter(FuseConfig(adapter_path=str(adapter), model=str(quantized(8)), save_path=str(tmp_path / "q")))


def test_the_check_catches_a_fuse_that_loses_the_adapter(adapter: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlx_lm.tuner.lora import LoRALinear

    monkeypatch.setattr(LoRALinear, "fuse", lambda self, dequantize=False: self.linear)  # a broken fuse
    with pytest.raises(FuseMismatch, match="misses 100.0% of the adapter's effect.*should not happen with float weights"):
        fuse_adapter(FuseConfig(adapter_path=str(adapter), save_path=str(tmp_path / "x")))
    assert (tmp_path / "x" / "lem_fuse.json").is_file()  # kept, with the numbers, for a person to judge


def test_bad_inputs_are_clear(adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.main import main

    with pytest.raises(ConfigError, match="holds no adapter"):
        fuse_adapter(FuseConfig(adapter_path=str(tmp_path), save_path=str(tmp_path / "out")))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        fuse_adapter(FuseConfig(adapter_path=str(adapter), save_path=str(tmp_path / "full")))
    assert main(["fuse", "--adapter-path", str(adapter), "--save-path", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "Fused model saved to" in out and "Fused the final adapter (step 6). This run has no best" in out
    assert main(["fuse", "--adapter-path", str(tmp_path), "--save-path", str(tmp_path / "cli2")]) == 2
    assert capsys.readouterr().err.startswith("Error: ")


@pytest.fixture(scope="module")
def run_with_best(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("best-data")
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": "The volunteers meet on Saturday."}]} for i in range(8)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:6]) + "\n")
    (data / "valid.jsonl").write_text("\n".join(json.dumps(r) for r in rows[6:]) + "\n")
    run = tmp_path_factory.mktemp("best-run") / "run"
    train_lora(TrainConfig(model=str(tiny_llama), data=str(data), adapter_path=str(run), num_layers=-1, iters=6,
                           batch_size=2, learning_rate=1e-2, save_every=3, steps_per_eval=3, val_batches=1))
    return run


def test_fuse_takes_the_best_adapter_by_default_or_the_final_one(run_with_best: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.main import main

    best = json.loads((run_with_best / "best" / "best.json").read_text())
    result = fuse_adapter(FuseConfig(adapter_path=str(run_with_best), save_path=str(tmp_path / "b")))
    assert result.adapter is not None and result.adapter.fused == "best" and not result.adapter.note
    assert result.adapter.path == run_with_best / "best" and result.adapter.iteration == best["iteration"]
    recorded = json.loads((tmp_path / "b" / "lem_fuse.json").read_text())["adapter"]
    assert recorded["fused"] == "best" and recorded["val_loss"] == pytest.approx(best["val_loss"])
    assert main(["fuse", "--adapter-path", str(run_with_best), "--adapter", "final",
                 "--save-path", str(tmp_path / "f")]) == 0
    assert "Fused the final adapter (step 6) from" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "f" / "lem_fuse.json").read_text())["adapter"]
    assert (recorded["requested"], recorded["fused"], recorded["path"]) == ("final", "final", str(run_with_best))


def test_choose_adapter_says_which_and_refuses_what_is_not_there(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "0000003").mkdir(parents=True)
    (run / "best").mkdir()
    (run / "best" / "adapters.safetensors").write_bytes(b"x")
    (run / "best" / "best.json").write_text(json.dumps({"iteration": 3, "val_loss": 1.25}))
    # Stopped before the end: a best adapter and a checkpoint, no final adapter.
    assert choose_adapter(run).describe() == "the best adapter (step 3, validation loss 1.250)"
    with pytest.raises(ConfigError, match="has no final adapter: it stopped before its last step"):
        choose_adapter(run, "final")
    with pytest.raises(ConfigError, match="best adapter, not its final one"):
        choose_adapter(run / "best", "final")
    checkpoint = choose_adapter(run / "checkpoints" / "0000003", "final")
    assert (checkpoint.fused, checkpoint.iteration) == ("checkpoint", 3)
    with pytest.raises(ConfigError, match="use best or final"):
        choose_adapter(run, "latest")
