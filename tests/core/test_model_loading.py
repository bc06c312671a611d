"""Loading never crashes: every bad input gives one ModelLoadError naming the folder and the problem."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from lemcore.errors import ModelFitError, ModelLoadError
from lemcore.hardware import GB, Hardware
from lemcore.models.fit import FitReport
from lemcore.models.loading import LoadStage, ModelLoaded, load_model, resolve_model
from tests import hub_server

hf_cache = hub_server.hf_cache  # fixture shared through tests/hub_server.py

BIG = Hardware("macOS 15", "Apple M3", True, False, 64 * GB, 64 * GB)


@pytest.fixture
def model_copy(tiny_llama: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny model to break in different ways."""
    return Path(shutil.copytree(tiny_llama, tmp_path / "my-model"))


def test_resolve_tells_folders_hub_ids_and_catalog_apart(model_copy: Path, tmp_path: Path, hf_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model(str(model_copy)).kind == "folder"
    assert resolve_model(str(model_copy)).folder == model_copy
    ref = resolve_model("gemma-3-4b")
    assert (ref.kind, ref.repo, ref.folder) == ("hub", "mlx-community/gemma-3-4b-it-qat-4bit", None)
    assert resolve_model("embedded").kind == "embedded"
    ref = resolve_model("someone/some-model")
    assert (ref.kind, ref.repo) == ("hub", "someone/some-model")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    # A missing path is never taken for a hub id, even when it looks like owner/name.
    missing = ("models/missing", "./missing", str(tmp_path / "nowhere" / "model"), "~/no-such-model-folder")
    for text in missing:
        with pytest.raises(ModelLoadError, match="does not exist"):
            resolve_model(text)
    with pytest.raises(ModelLoadError, match="not a model folder here, a catalog model or a hub id"):
        resolve_model("gemma-5")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="is a file, not a model folder.*GGUF"):
        resolve_model("model.gguf")
    with pytest.raises(ModelLoadError, match="No model given"):
        resolve_model("  ")


def test_load_a_good_folder_with_events(tiny_llama: Path) -> None:
    events: list[object] = []
    model, tokenizer = load_model(tiny_llama, hw=BIG, report=events.append)
    assert tokenizer.encode("The volunteers") and model.layers
    stages = [e.stage for e in events if isinstance(e, LoadStage)]
    assert stages == ["resolve", "check", "load"]
    fit = next(e for e in events if isinstance(e, FitReport))
    assert fit.verdict == "green" and isinstance(events[-1], ModelLoaded) and events[-1].fit == fit


def _error(path: Path | str) -> str:
    with pytest.raises(ModelLoadError) as err:
        load_model(path, hw=BIG)
    return str(err.value)


def test_missing_folder(tmp_path: Path) -> None:
    message = _error(tmp_path / "gone")
    assert str(tmp_path / "gone") in message and "does not exist" in message


def test_folder_without_weights(model_copy: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    message = _error(model_copy)
    assert str(model_copy) in message and "no weights" in message


def test_corrupt_config(model_copy: Path) -> None:
    (model_copy / "config.json").write_text('{"model_type": "llama", "hidden_size": 6')
    message = _error(model_copy)
    assert str(model_copy) in message and "config.json" in message and "corrupt" in message
    (model_copy / "config.json").unlink()
    assert "has no config.json" in _error(model_copy)
    (model_copy / "config.json").write_text("[1, 2]")
    assert "not a JSON object" in _error(model_copy)
    (model_copy / "config.json").write_text('{"hidden_size": 64}')
    assert "has no model_type" in _error(model_copy)


def test_unknown_architecture(model_copy: Path) -> None:
    config = json.loads((model_copy / "config.json").read_text())
    (model_copy / "config.json").write_text(json.dumps({**config, "model_type": "quantum_brain"}))
    message = _error(model_copy)
    assert str(model_copy) in message and "'quantum_brain'" in message and "mlx-lm" in message


def test_missing_tokenizer_and_broken_weights(model_copy: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_copy / name).rename(model_copy.parent / name)
    assert "has no tokenizer" in _error(model_copy)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_copy.parent / name).rename(model_copy / name)

    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(model_copy)
    # Weights that parse but do not match the architecture: mlx-lm's own error, wrapped with the folder.
    config = json.loads((model_copy / "config.json").read_text())
    weights.write_bytes(data)
    (model_copy / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    message = _error(model_copy)
    assert message.startswith(f"Could not load the model in {model_copy}") and "Traceback" not in message


def test_hub_id_offline_is_a_clear_message(hf_cache: Path) -> None:
    start = time.monotonic()
    message = _error("someone/not-downloaded")
    assert time.monotonic() - start < 3
    assert "someone/not-downloaded" in message and "not on this computer" in message
    assert "HF_HUB_OFFLINE" in message and "built-in model" in message
    assert "no folder" in message  # it might have been meant as a path
    message = _error("gemma-3-1b")
    assert message.startswith("Gemma 3 1B (4-bit) (mlx-community/gemma-3-1b-it-qat-4bit) is not on this")
    with pytest.raises(ModelLoadError, match="not downloaded yet"):
        load_model("gemma-3-1b", download=False)


def test_red_fit_refuses_unless_forced(tiny_llama: Path) -> None:
    small = Hardware("macOS 15", "Apple M1", True, False, 2 * GB, 2 * GB)
    with pytest.raises(ModelFitError, match="needs ~"):
        load_model(tiny_llama, hw=small)
    model, _ = load_model(tiny_llama, hw=small, force=True)
    assert model is not None


def test_tokenizer_is_loaded_once_and_again_when_its_files_change(model_copy: Path) -> None:
    from lemcore.models.loading import warm_tokenizer

    assert warm_tokenizer(str(model_copy)) is True
    _, first = load_model(str(model_copy), hw=BIG)
    _, again = load_model(str(model_copy), hw=BIG)
    assert again is first
    config_file = model_copy / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["model_max_length"] = 4096
    config_file.write_text(json.dumps(config))
    _, changed = load_model(str(model_copy), hw=BIG)
    assert changed is not first
    assert changed.model_max_length == 4096


def test_warm_tokenizer_quietly_skips_models_that_are_not_here(tmp_path: Path, hf_cache: Path) -> None:
    from lemcore.models.loading import warm_tokenizer

    assert warm_tokenizer(str(tmp_path / "no-such-model")) is False
    assert warm_tokenizer("someone/not-downloaded") is False
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert warm_tokenizer(str(tmp_path / "broken")) is False
