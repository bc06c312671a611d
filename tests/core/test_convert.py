"""Converting a Hugging Face checkpoint into a quantized MLX folder, with stages, cancel and the fit check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lemcore.errors import Cancelled, ConfigError, ModelFitError, ModelLoadError
from lemcore.hardware import GB, Hardware
from lemcore.jobs import CancelToken
from lemcore.models.convert import ConvertStage, convert_model
from lemcore.models.fit import FitReport
from lemcore.models.loading import load_model
from tests import hub_server
from tests.hub_server import HubServer

hf_cache = hub_server.hf_cache  # fixture shared through tests/hub_server.py
hub_online = hub_server.hub_online  # fixture shared through tests/hub_server.py

ROOT = Path(__file__).resolve().parents[2]
BIG = Hardware("macOS 15", "Apple M3", True, False, 64 * GB, 64 * GB)


@pytest.fixture(scope="module")
def hf_checkpoint(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama as a Hugging Face checkpoint: float16 tensors saved by `safetensors` with PyTorch
    metadata, torch_dtype in config.json, tokenizer files beside. mlx-lm's llama names are HF names."""
    import mlx.core as mx
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("hf-checkpoint")
    weights = mx.load(str(tiny_llama / "model.safetensors"))
    tensors = {k: np.array(v.astype(mx.float16)) for k, v in weights.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((tiny_llama / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "torch_dtype": "float16"}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, folder / name)
    return folder


def test_convert_quantizes_with_stages_and_loads(hf_checkpoint: Path, tmp_path: Path) -> None:
    events: list[object] = []
    out = convert_model(hf_checkpoint, tmp_path / "out", q_bits=4, hw=BIG, report=events.append)
    assert out == tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"}
    stages = [e.stage for e in events if isinstance(e, ConvertStage)]
    assert stages[0] == "check" and stages[-2:] == ["verify", "done"]
    assert [s for s in ("load", "quantize", "save") if s in stages] == ["load", "quantize", "save"]
    fit = next(e for e in events if isinstance(e, FitReport))
    assert fit.verdict == "green" and fit.name == f"Converting {hf_checkpoint.name}"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no work folder left behind
    model, tokenizer = load_model(out, hw=BIG)
    assert model is not None and tokenizer.encode("ethics")
    # The 4-bit copy is smaller than the float16 source.
    assert (out / "model.safetensors").stat().st_size < (hf_checkpoint / "model.safetensors").stat().st_size


def test_cancel_leaves_nothing(hf_checkpoint: Path, tmp_path: Path) -> None:
    cancel = CancelToken()

    def on_event(event: object) -> None:
        if isinstance(event, ConvertStage) and event.stage == "quantize":
            cancel.cancel("stop")

    with pytest.raises(Cancelled):
        convert_model(hf_checkpoint, tmp_path / "out", hw=BIG, report=on_event, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_fit_output_and_source_checks(hf_checkpoint: Path, tmp_path: Path) -> None:
    small = Hardware("macOS 15", "Apple M1", True, False, 2 * GB, 2 * GB)
    with pytest.raises(ModelFitError, match="Converting"):
        convert_model(hf_checkpoint, tmp_path / "out", hw=small)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        convert_model(hf_checkpoint, tmp_path / "out", hw=BIG)
    out = convert_model(hf_checkpoint, tmp_path / "out", q_bits=8, q_group_size=32, overwrite=True, hw=BIG)
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 8
    with pytest.raises(ConfigError, match="q-bits 7"):
        convert_model(hf_checkpoint, tmp_path / "x", q_bits=7)
    with pytest.raises(ModelLoadError, match="does not exist"):
        convert_model(tmp_path / "missing", tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        convert_model(tmp_path / "empty", tmp_path / "x")
    # mlx-lm's own failure (weights that do not match the config) is wrapped with the folder.
    broken = Path(shutil.copytree(hf_checkpoint, tmp_path / "broken"))
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ModelLoadError, match=f"Could not convert the model in {broken}: ValueError: Missing"):
        convert_model(broken, tmp_path / "x", hw=BIG)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))


def test_convert_a_hub_id_downloads_first(hub_online: Path, hf_checkpoint: Path, tmp_path: Path) -> None:
    events: list[object] = []
    with HubServer.from_folder("lab/tiny-base", hf_checkpoint) as hub:
        out = convert_model("lab/tiny-base", tmp_path / "out", hw=BIG, endpoint=hub.url, report=events.append)
    assert (out / "config.json").is_file()
    assert [e.stage for e in events if isinstance(e, ConvertStage)][:2] == ["check", "download"]


def test_lem_models_convert_and_fit_cli(hf_checkpoint: Path, tmp_path: Path, hf_cache: Path) -> None:
    def lem(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lemcore.cli.main", "models", *args], check=False, cwd=ROOT,
                              env=dict(os.environ), capture_output=True, text=True, timeout=120)

    out = lem("convert", str(hf_checkpoint), "--out", str(tmp_path / "q4"), "--q-bits", "4")
    assert out.returncode == 0, out.stderr
    assert f"Converted: {tmp_path / 'q4'}" in out.stdout and "quantize" in out.stderr
    fit = lem("fit", str(tmp_path / "q4"), "--ram", "16")
    assert fit.returncode == 0 and fit.stdout.startswith("GREEN: q4 needs ~"), fit.stdout + fit.stderr
    fit = lem("fit", "gemma-3-27b", "--ram", "8")
    assert fit.returncode == 1 and fit.stdout.startswith("RED: Gemma 3 27B (4-bit) needs ~")
    bad = lem("fit", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
