"""The fit check: arithmetic, verdicts, words, and figures read from files without reading the tensors."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from lemcore.errors import ModelFitError, ModelLoadError
from lemcore.hardware import GB, Hardware
from lemcore.models.fit import (
    GREEN,
    RED,
    YELLOW,
    KVShape,
    ModelNeeds,
    assess_fit,
    full_speed_batch,
    kv_shape_from_config,
    machine_batch,
    needs_from_folder,
    require_fit,
    usable_memory,
)
from lemcore.models.loading import check_fit
from tests import hub_server

hf_cache = hub_server.hf_cache  # fixture shared through tests/hub_server.py


def mac(ram_gb: float, free_gb: float | None = None) -> Hardware:
    free = ram_gb if free_gb is None else free_gb
    return Hardware("macOS 15.3", "Apple M3 (Apple Silicon)", True, False, int(ram_gb * GB), int(free * GB))


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]],
                      data_size: int | None = None, extra_bytes: bytes = b"") -> None:
    """A .safetensors file from (dtype, shape, nbytes) per tensor; the data is sparse zeros."""
    header, offset = {}, 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + extra_bytes)
        f.truncate(8 + len(raw) + (offset if data_size is None else data_size))


def test_usable_memory_matches_measured_macs() -> None:
    # Jan PR #7842 measured usable unified memory: 8 -> ~4.7, 16 -> ~11.9, 32 -> ~26.3 GB.
    for ram, measured in ((8, 4.7), (16, 11.9), (32, 26.3)):
        assert usable_memory(mac(ram)) / GB == pytest.approx(measured, abs=0.05)
    assert usable_memory(mac(16), gpu_limit=int(10.7 * GB)) == int(10.7 * GB)
    assert usable_memory(mac(2)) == 0  # never negative


def test_kv_cache_arithmetic() -> None:
    full = KVShape(layers=32, kv_heads=8, head_dim=128, dtype_bytes=2)
    # 2 (K and V) x 8 heads x 128 dims x 2 bytes = 4 KiB per token per layer.
    assert full.bytes_for(batch=1, context=4096) == 32 * 4096 * 4096
    assert full.bytes_for(batch=8, context=1024) == 8 * 32 * 1024 * 4096
    # Gemma-style: 60 of 72 layers keep only a 1024-token window.
    sliding = KVShape(72, 8, 128, 2, sliding_window=1024, sliding_layers=60)
    assert sliding.bytes_for(1, 8192) == 4096 * (12 * 8192 + 60 * 1024)
    assert sliding.bytes_for(1, 512) == 4096 * 72 * 512  # a context shorter than the window


def test_fit_arithmetic_and_words() -> None:
    needs = ModelNeeds("Test 12B", 6 * GB, KVShape(48, 8, 256, 2, 1024, 40), "test")
    fit = assess_fit(needs, mac(16), batch=1, context=4096)
    kv = 8 * 4096 * 8192 + 40 * 1024 * 8192
    working = GB // 4 + int(0.1 * 6 * GB)
    assert fit.kv_bytes == kv and fit.working_bytes == working
    assert fit.needed_bytes == 6 * GB + kv + working
    assert fit.usable_bytes == usable_memory(mac(16))
    assert fit.verdict == GREEN and fit.fits
    assert "Test 12B needs ~7.4 GB (weights 6.0 GB + context cache 0.6 GB for 1 x 4096 tokens" in fit.words
    assert "this Mac can give ~11.9 GB (16.0 GB minus ~4.1 GB kept for the system" in fit.words
    require_fit(fit)  # green: no error


def test_red_refuses_unless_forced_and_says_why() -> None:
    needs = ModelNeeds("Big", 15 * GB, KVShape(62, 16, 128), "test")
    fit = assess_fit(needs, mac(16))
    assert fit.verdict == RED and not fit.fits
    with pytest.raises(ModelFitError) as err:
        require_fit(fit)
    assert "needs ~" in str(err.value) and "can give ~11.9 GB" in str(err.value) and "force" in str(err.value)
    require_fit(fit, force=True)
    pc = Hardware("Linux 6.1", "x86_64", False, False, 16 * GB, 16 * GB)
    assert "this computer can give" in assess_fit(needs, pc).words


def test_yellow_when_tight_or_memory_is_busy() -> None:
    needs = ModelNeeds("M", int(9.5 * GB), KVShape(4, 1, 64), "test")
    tight = assess_fit(needs, mac(16))
    assert tight.verdict == YELLOW and "Tight" in tight.words
    small = ModelNeeds("S", 3 * GB, KVShape(4, 1, 64), "test")
    busy = assess_fit(small, mac(16, free_gb=2))
    assert busy.verdict == YELLOW and "only ~2.0 GB is free right now" in busy.words
    assert assess_fit(small, mac(16, free_gb=12)).verdict == GREEN


def test_kv_shape_from_configs() -> None:
    llama = {"model_type": "llama", "num_hidden_layers": 16, "num_attention_heads": 32, "hidden_size": 2048,
             "num_key_value_heads": 8, "torch_dtype": "float32"}
    assert kv_shape_from_config(llama) == KVShape(16, 8, 64, 4, None, 0)
    gemma = {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "num_hidden_layers": 34,
             "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_size": 2560,
             "sliding_window": 1024}}
    assert kv_shape_from_config(gemma) == KVShape(34, 4, 256, 2, 1024, 34 - 34 // 6)
    typed = {"num_hidden_layers": 3, "num_attention_heads": 2, "head_dim": 8, "sliding_window": 16,
             "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]}
    assert kv_shape_from_config(typed, dtype_bytes=2) == KVShape(3, 2, 8, 2, 16, 2)
    with pytest.raises(ModelLoadError, match="shape"):
        kv_shape_from_config({"model_type": "llama"})


def test_needs_from_tiny_folder(tiny_llama: Path) -> None:
    import mlx.core as mx

    needs = needs_from_folder(tiny_llama)
    tensors = mx.load(str(tiny_llama / "model.safetensors"))
    assert needs.weight_bytes == sum(t.nbytes for t in tensors.values())
    assert needs.kv == KVShape(2, 2, 16, 4, None, 0)  # float32 tiny model: a float32 cache
    assert "safetensors headers" in needs.source


def test_weights_come_from_headers_only_and_drop_the_vision_tower(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {
        "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 8, "hidden_size": 16}}))
    # 40 GB of (sparse) language-model weights: reading them would take minutes, the header microseconds.
    write_safetensors(folder / "model-00001-of-00002.safetensors", {
        "language_model.model.layers.0.mlp.weight": ("U32", [10, 10], 40 * GB)})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {
        "language_model.model.norm.weight": ("BF16", [16], 1000),
        "vision_tower.encoder.weight": ("BF16", [10], 800 * 1024**2)})
    start = time.monotonic()
    needs = needs_from_folder(folder)
    assert time.monotonic() - start < 1.0
    assert needs.weight_bytes == 40 * GB + 1000
    assert needs.kv.dtype_bytes == 2


def test_damaged_weight_files_are_named(tmp_path: Path, tiny_llama: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_llama / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(ModelLoadError, match="damaged or not a safetensors file") as err:
        needs_from_folder(folder)
    assert str(folder / "model.safetensors") in str(err.value)
    write_safetensors(folder / "model.safetensors", {"w": ("F32", [4], 16)}, data_size=10)
    with pytest.raises(ModelLoadError, match="truncated"):
        needs_from_folder(folder)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10**12))
    with pytest.raises(ModelLoadError, match="not plausible"):
        needs_from_folder(folder)


def test_check_fit_for_catalog_ids_and_folders(tiny_llama: Path, hf_cache: Path) -> None:
    fit = check_fit("gemma-3-12b", hw=mac(16), gpu_limit=0)
    assert fit.verdict == GREEN and "Gemma 3 12B" in fit.words
    with pytest.raises(ModelFitError, match="Gemma 3 27B"):
        check_fit("gemma-3-27b", hw=mac(16), gpu_limit=0)
    assert check_fit("gemma-3-27b", hw=mac(16), force=True, gpu_limit=0).verdict == RED
    assert check_fit("gemma-3-27b", hw=mac(32), gpu_limit=0).verdict == GREEN
    assert check_fit(str(tiny_llama), hw=mac(8), batch=8, gpu_limit=0).batch == 8



def linux(ram_gb: float) -> Hardware:
    return Hardware("Debian 13", "x86_64 (test CPU)", False, False, int(ram_gb * GB), int(ram_gb * GB))


def test_full_speed_batch_by_cores_memory_and_model() -> None:
    assert machine_batch(23 * GB, 2) == 16  # the measured machine: 16 in flight beat the 2/4/8 presets
    assert machine_batch(12 * GB, 4) == 8 and machine_batch(6 * GB, 4) == 4
    assert machine_batch(64 * GB, 1) == 8  # one core: every step, and so every answer, takes longer
    assert machine_batch(64 * GB, 8, metal=True) == 8
    small = ModelNeeds("S", 300 * 1024**2, KVShape(30, 3, 64, 4), "test")
    assert full_speed_batch(small, linux(23), cores=2) == 16
    # A 12B model's caches for 16 x 4K tokens do not fit next to its weights in 16 GB: halved until they do.
    big = ModelNeeds("Test 12B", 6 * GB, KVShape(48, 8, 256, 2), "test")
    batch = full_speed_batch(big, linux(16), cores=8)
    assert 1 <= batch < 8
    assert assess_fit(big, linux(16), batch=batch, cores=8).verdict != RED
    assert assess_fit(big, linux(16), batch=batch * 2).needed_bytes > 0.85 * usable_memory(linux(16))
    report = assess_fit(small, linux(23), cores=2)
    assert report.full_speed_batch == 16 and assess_fit(small, linux(23)).full_speed_batch == 0


def test_contribute_maximum_preset_and_fit_command_use_the_machine_batch(
        tiny_llama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    import psutil

    from lemcore.cli.main import main
    from lemcore.contribute.governor import PRESETS
    from lemcore.models.fit import metal_working_set

    metal = metal_working_set() is not None
    assert PRESETS["max"] == machine_batch(psutil.virtual_memory().total, os.cpu_count() or 1, metal=metal)
    assert PRESETS["gentle"] < PRESETS["balanced"] <= PRESETS["max"]
    assert main(["models", "fit", str(tiny_llama), "--ram", "6"]) == 0
    out = capsys.readouterr().out
    assert f"Full speed here: {4 if not metal else 8} answers generated at once" in out
