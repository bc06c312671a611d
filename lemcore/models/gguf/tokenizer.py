"""Rebuild a Hugging Face `tokenizers` tokenizer from the vocabulary stored in GGUF metadata.

Used by `lemcore.models.gguf.convert`. GGUF files carry no tokenizer.json, and transformers' own `gguf_file=`
loader needs torch, so the tokenizer is rebuilt from `tokenizer.ggml.*` keys. Two families exist: byte-level BPE
(`tokenizer.ggml.model = "gpt2"`, e.g. SmolLM2, Llama 3) and SentencePiece BPE (`"llama"`, e.g. Gemma, Llama 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lemcore.errors import ModelLoadError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# llama.cpp token types (llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer regex of Llama 3 ("llama-bpe" in llama.cpp): digits in runs of up to three.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp pre-tokenizer names that mean "each digit alone, then GPT-2 byte-level" (SmolLM2, StarCoder).
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "codeshell"}
_PLAIN_GPT2 = {"gpt-2", "gpt2", "default"}
_LLAMA3 = {"llama-bpe", "llama3", "smaug-bpe"}


def _byte_level_bpe(meta: dict[str, Any], tokens: list[str], source: Path) -> Tokenizer:
    from tokenizers import (  # lazy: only the GGUF converter needs it
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)  # a few vocabularies repeat a string; the first id wins, as in llama.cpp
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))

    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre in _DIGITS_THEN_GPT2:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif pre in _PLAIN_GPT2:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre in _LLAMA3:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        # A wrong pre-tokenizer silently degrades every answer, so refuse rather than guess.
        raise ModelLoadError(
            f"{source} uses the tokenizer pre-processing '{pre}', which LEM Desktop cannot rebuild yet. "
            "Use a model in MLX format (a folder with tokenizer.json) instead."
        )
    tokenizer.decoder = decoders.ByteLevel()  # mlx-lm picks its fast streaming detokenizer from this
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _sentencepiece_bpe(meta: dict[str, Any], tokens: list[str], types: list[int], source: Path) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers  # lazy: only the GGUF converter needs it

    scores = meta.get("tokenizer.ggml.scores")
    if scores is None:
        raise ModelLoadError(f"{source} has a SentencePiece vocabulary without scores; it cannot be read.")
    scores = list(scores)
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)

    # SentencePiece BPE merges the pair whose result scores highest. `tokenizers` wants an ordered merge
    # list instead: every split of a mergeable piece into two known pieces, ranked by the piece's score.
    mergeable = {i for i, t in enumerate(types) if t in (_NORMAL, _USER_DEFINED)}
    rank = {tok: r for r, (_, tok) in enumerate(sorted((-scores[i], tokens[i]) for i in mergeable))}
    ranked = []
    for piece, piece_rank in rank.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((piece_rank, vocab[left], vocab[right], left, right))
    ranked.sort()
    merges = [(left, right) for _, _, _, left, right in ranked]

    unk_id = int(meta.get("tokenizer.ggml.unknown_token_id", 0))
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab, merges=merges, unk_token=tokens[unk_id], fuse_unk=True, byte_fallback=True
        )
    )
    add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("▁")] if add_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    # These exact decoder sequences are what mlx-lm recognises for its SentencePiece streaming detokenizer.
    parts = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        parts.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(parts)
    return tokenizer


def write_tokenizer(
    meta: dict[str, Any], out_dir: Path, source: Path, max_length: int | None
) -> dict[str, int | None]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out_dir`.

    Returns the special token ids ({"bos_token_id": .., "eos_token_id": ..}) for config.json.
    """
    from tokenizers import AddedToken, processors  # lazy: only the GGUF converter needs it

    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ModelLoadError(f"{source} holds no tokenizer vocabulary; it cannot be used for chat.")
    tokens = list(tokens)
    types = list(meta.get("tokenizer.ggml.token_type", [_NORMAL] * len(tokens)))
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(meta, tokens, source)
        add_bos_default = False
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(meta, tokens, types, source)
        add_bos_default = True
    else:
        raise ModelLoadError(
            f"{source} uses the tokenizer type '{kind}', which LEM Desktop cannot rebuild. "
            "Use a model in MLX format (a folder with tokenizer.json) instead."
        )

    # Control tokens (<|im_start|>, <start_of_turn>...) must never be split by the BPE.
    specials = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == _CONTROL]
    added = [AddedToken(tokens[i], special=False, normalized=True) for i, t in enumerate(types) if t == _USER_DEFINED]
    tokenizer.add_special_tokens(specials)
    if added:
        tokenizer.add_tokens(added)

    def token_for(key: str) -> tuple[int | None, str | None]:
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        if value is None:
            return None, None
        idx = int(value)
        return (idx, tokens[idx]) if 0 <= idx < len(tokens) else (None, None)

    bos_id, bos = token_for("bos")
    eos_id, eos = token_for("eos")
    _, pad = token_for("padding")
    _, unk = token_for("unknown")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default))
    if add_bos and bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    tokenizer.save(str(out_dir / "tokenizer.json"))

    special_map = {k: v for k, v in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad),
                                     ("unk_token", unk if kind == "llama" else None)) if v is not None}
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length or 2048,
    }
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = str(template)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2), encoding="utf-8")
    return {"bos_token_id": bos_id, "eos_token_id": eos_id}
