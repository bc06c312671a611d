"""The tiny offline models every MLX test builds on: fast to build, loadable by mlx-lm, deterministic."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny_models import ARCHS, make_tiny_model, tokenizer_json

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 17 + 25?"},
]
# What each arch's template must produce, and the token that ends an assistant turn.
EXPECTED_CHAT = {
    "llama": (
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 17 + 25?<|im_end|>\n"
            "<|im_start|>assistant\n"
        ),
        "<|im_end|>",
    ),
    "gemma3_text": (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is 17 + 25?<end_of_turn>\n<start_of_turn>model\n",
        "<end_of_turn>",
    ),
}


def _greedy_ids(model, tokenizer, prompt_ids: list[int], max_tokens: int) -> list[int]:
    from mlx_lm import stream_generate

    return [r.token for r in stream_generate(model, tokenizer, prompt_ids, max_tokens=max_tokens)]


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_fast_with_the_expected_files(arch, tmp_path):
    importlib.import_module(f"mlx_lm.models.{arch}")  # time the build, not the first import
    tokenizer_json.cache_clear()  # include the tokenizer training
    start = time.perf_counter()
    path = make_tiny_model(tmp_path / "m", arch)
    elapsed = time.perf_counter() - start

    assert elapsed < 2.0, f"building took {elapsed:.2f} s (budget 1 s)"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (path / "model.safetensors").stat().st_size < 1_000_000


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_with_a_working_chat_template(arch, tmp_path):
    import mlx_lm

    _model, tokenizer = mlx_lm.load(make_tiny_model(tmp_path / "m", arch))
    expected_text, end_of_turn = EXPECTED_CHAT[arch]

    assert tokenizer.has_chat_template
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == expected_text
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert ids == tokenizer.encode(expected_text, add_special_tokens=False)
    assert tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(end_of_turn)
    assert tokenizer.eos_token_id in tokenizer.eos_token_ids
    # Digits are split one by one and text survives the round trip.
    sample = "Count 148 books in 2024."
    encoded = tokenizer.encode(sample, add_special_tokens=False)
    assert [tokenizer.decode([t]) for t in encoded if tokenizer.decode([t]).isdigit()] == list("1482024")
    assert tokenizer.decode(encoded) == sample


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_is_deterministic_per_seed(arch, tmp_path):
    import mlx_lm

    paths = [
        make_tiny_model(tmp_path / name, arch, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    weights = [(p / "model.safetensors").read_bytes() for p in paths]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]

    runs = []
    for path in paths:
        model, tokenizer = mlx_lm.load(path)
        prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
        runs.append(_greedy_ids(model, tokenizer, prompt, max_tokens=8))
        assert isinstance(mlx_lm.generate(model, tokenizer, prompt, max_tokens=8), str)
    assert len(runs[0]) == 8
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_generate_matches_one_by_one(arch, tmp_path):
    import mlx_lm

    model, tokenizer = mlx_lm.load(make_tiny_model(tmp_path / "m", arch))
    questions = ["Hello", "What is 6 times 7?", "Tell me why volunteers keep their promises to each other."]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        for q in questions
    ]
    # 40 new tokens run past gemma's 32-token sliding window, so its rotating cache is exercised too.
    result = mlx_lm.batch_generate(model, tokenizer, prompts, max_tokens=40, return_token_ids=True)

    assert len(result.texts) == 3
    assert [len(ids) for ids in result.token_ids] == [40, 40, 40]
    assert result.token_ids == [_greedy_ids(model, tokenizer, p, max_tokens=40) for p in prompts]


@pytest.mark.parametrize("num_layers", [1, 3])
def test_gemma_window_pattern_fits_any_layer_count(num_layers, tmp_path):
    import mlx_lm

    model, tokenizer = mlx_lm.load(make_tiny_model(tmp_path / "m", "gemma3_text", num_layers=num_layers))
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert len(_greedy_ids(model, tokenizer, prompt, max_tokens=4)) == 4


def test_tokenizer_is_identical_across_processes():
    script = (
        "import hashlib; from tests.tiny_models import ARCHS, tokenizer_json; "
        "print(' '.join(hashlib.sha256(tokenizer_json(a, 512).encode()).hexdigest() for a in ARCHS))"
    )
    here = " ".join(hashlib.sha256(tokenizer_json(a, 512).encode()).hexdigest() for a in ARCHS)
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == here


def test_rejects_unknown_arch(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        make_tiny_model(tmp_path / "m", "mistral")
