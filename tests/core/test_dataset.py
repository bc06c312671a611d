"""Contributed answers -> train/valid/test.jsonl: what is kept, where each seed goes, the card, and that both
`lem train` (our data checks) and plain mlx-lm read the folder."""

from __future__ import annotations

import hashlib
import json
import random
import types
from pathlib import Path
from typing import Any

import pytest

from lemcore.cli.data import sandwich_text
from lemcore.errors import ConfigError, DataError
from lemcore.settings import data_dir
from lemcore.train.data import check_data, load_training_data
from lemcore.train.dataset import (
    CARD_JSON,
    CARD_MD,
    DatasetConfig,
    build_dataset,
    record_kind,
    seed_bucket,
    split_by_domain,
    split_by_seed,
)

SENTENCES = [
    "Start by asking the student what they want to happen next.",
    "School policy matters, but it was written for situations it could not foresee.",
    "Write down what you know and what you are only guessing.",
    "A quiet conversation with the head of year may find room you did not expect.",
    "Telling the parents now would take the decision away from the person it concerns most.",
    "You can keep your own integrity without breaking a confidence.",
    "If there is a real risk of harm, the balance changes and you should say so plainly.",
    "Offer options rather than verdicts, and explain the likely cost of each.",
    "Check whether the records you keep would reveal more than anyone needs to know.",
    "Ask for advice from someone who has handled a similar case before.",
    "Be honest that you cannot promise an outcome you do not control.",
    "Agree a time to talk again, so nobody is left waiting without news.",
    "Most people decide better when they see the facts laid out side by side.",
    "Keep notes brief and factual, and share them only with those who must act on them.",
]


def _answer(seed: int, variant: int) -> str:
    rng = random.Random(seed * 101 + variant)
    return " ".join(rng.sample(SENTENCES, 6))


def _ours(seed: int, voice: str, *, idx: int, variant: int = 0, truncated: bool = False, kind: str = "gold",
          response: str | None = None, domain: str = "") -> dict[str, Any]:
    prompt = f"Case {seed}: a volunteer asks what to do about a difficult choice number {seed}."
    if voice != "original":
        prompt = f"My {voice} friend told me this. {prompt} What would you say?"
    row = {"idx": idx, "seed_id": f"S{seed:03d}", "domain": domain or ("Privacy" if seed % 2 else "Health"),
           "prompt": prompt, "response": _answer(seed, variant) if response is None else response,
           "gen_time": 1.5, "model": "smollm2-135m", "worker": "w1", "tokens": 120, "prompt_tokens": 900,
           "truncated": truncated, "temperature": 0.3, "max_tokens": 512, "kind": kind, "prompt_set": "abc"}
    row["voice" if kind == "gold" else "region"] = voice if kind == "gold" else "en"
    return row


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def outputs() -> Path:
    """The app's output folder with 40 seeds x 2 voices of good gold answers plus the cases to drop."""
    out = data_dir() / "output"
    rows = []
    for seed in range(40):
        for v, voice in enumerate(("original", "student")):
            rows.append(_ours(seed, voice, idx=seed * 2 + v, variant=v))
    rows.append(dict(rows[0]))  # an exact copy (a journal re-adoption, a merged file)
    rows.append(_ours(0, "original", idx=900, variant=7))  # a second answer to the same prompt
    rows.append(_ours(41, "original", idx=901, response="The answer is. " * 40))  # a loop
    rows.append(_ours(42, "original", idx=902, truncated=True))  # cut at the token limit
    rows.append(_ours(43, "original", idx=903, response="  "))  # empty
    _write(out / "gold-w1.jsonl", rows)
    _write(out / "gold-w1.jsonl.lost.jsonl", [_ours(44, "original", idx=904) | {"lost": "owned"}])
    _write(out / "expand-w1.jsonl", [_ours(50 + s, "en", idx=s, kind="expansion") for s in range(6)])
    (out / "gold-w1.jsonl.journal.sqlite").write_bytes(b"not json")
    return out


def _read(folder: Path, name: str) -> list[dict[str, Any]]:
    path = folder / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _seed_of(prompt: str) -> str:
    return prompt.split("Case ", 1)[1].split(":", 1)[0]


def test_build_keeps_good_answers_splits_by_seed_and_writes_a_card(outputs: Path, tmp_path: Path) -> None:
    result = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "ds"),
                                         sandwich_text=sandwich_text()))
    folder = result.out_dir
    splits = {name: _read(folder, name) for name in ("train", "valid", "test")}
    # 80 gold + 6 expansion answers kept, one per prompt; exact copy, second answer, loop, cut, empty dropped.
    assert sum(len(v) for v in splits.values()) == 86 == result.card["filtered"]["kept"]
    f = result.card["filtered"]
    assert (f["duplicate_answer"], f["duplicate_prompt"]) == (1, 1)
    assert f["gate"]["refused_by_reason"] == {"empty": 1, "repetition": 1, "truncated": 1}
    assert f["not_reported"] == 0  # the .lost.jsonl file is not even read
    assert [s["path"] for s in result.card["sources"]] == [str(outputs / "expand-w1.jsonl"),
                                                           str(outputs / "gold-w1.jsonl")]
    assert result.card["sources"][1]["sha256"] == hashlib.sha256((outputs / "gold-w1.jsonl").read_bytes()).hexdigest()
    # No prompt family in two splits; every split has some.
    seeds = {name: {_seed_of(r["messages"][0]["content"]) for r in rows} for name, rows in splits.items()}
    assert all(seeds.values())
    assert not (seeds["train"] & seeds["valid"]) and not (seeds["train"] & seeds["test"]) \
        and not (seeds["valid"] & seeds["test"])
    # The plain prompt, no sandwich, no metadata: exactly mlx-lm's chat format.
    every = [r for rows in splits.values() for r in rows]
    assert all(set(r) == {"messages"} and [m["role"] for m in r["messages"]] == ["user", "assistant"] for r in every)
    assert not any("Consider this ethical framework" in r["messages"][0]["content"] for r in every)
    # The first answer read is the one kept for a prompt with two.
    first = [r for r in every if r["messages"][0]["content"].startswith("Case 0:")]
    assert first[0]["messages"][1]["content"] == _answer(0, 0)
    # The card, in JSON and in words.
    card = json.loads((folder / CARD_JSON).read_text())
    assert card["examples"] == {k: len(v) for k, v in splits.items()}
    assert card["lengths"]["unit"] == "characters" and card["prompt_policy"]["name"] == "plain"
    assert card["kinds"] == {"gold": 80, "expansion": 6}
    assert set(card["domains"]) == {"Privacy", "Health"}
    text = (folder / CARD_MD).read_text()
    assert "distilled away" in text and "Counted in characters" in text and "repeats itself in a loop" in text
    assert "first read" in card["duplicates"]


def test_both_lem_train_and_plain_mlx_lm_read_the_folder(outputs: Path, tmp_path: Path, tiny_llama: Path) -> None:
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.utils import load

    folder = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "ds"),
                                         model=str(tiny_llama), max_seq_length=64)).out_dir
    card = json.loads((folder / CARD_JSON).read_text())
    assert card["lengths"]["unit"] == "tokens" and card["lengths"]["train"]["example"]["max"] > 20
    assert card["lengths"]["train"]["over_max_seq_length"] > 0
    _, tokenizer = load(str(tiny_llama))
    report = check_data(folder, tokenizer=tokenizer, batch_size=2, mask_prompt=True, max_seq_length=2048)
    assert report.ok and report.format == "chat" and set(report.splits) == {"train", "valid", "test"}
    assert not [w for w in report.warnings if "also appear in train" in w]
    _, train, valid = load_training_data(folder, tokenizer, batch_size=2, mask_prompt=True, max_seq_length=2048,
                                         iters=10)
    assert len(train) == card["examples"]["train"] and len(valid) == card["examples"]["valid"]
    # mlx-lm's own loader, as `mlx_lm lora --train --test --mask-prompt --data folder` calls it.
    args = types.SimpleNamespace(data=str(folder), train=True, test=True, hf_dataset=False, mask_prompt=True)
    sets = load_dataset(args, tokenizer)
    assert [len(s) for s in sets] == [card["examples"][n] for n in ("train", "valid", "test")]
    ids, offset = CacheDataset(sets[0])[0]
    assert 0 < offset < len(ids)  # prompt masked, answer trained


def test_the_seed_split_is_deterministic_and_a_seed_keeps_its_split(outputs: Path, tmp_path: Path) -> None:
    one = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "a")))
    two = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "b")))
    for name in ("train", "valid", "test"):
        assert (one.out_dir / f"{name}.jsonl").read_bytes() == (two.out_dir / f"{name}.jsonl").read_bytes()
    before = {_seed_of(r["messages"][0]["content"]): n for n in ("train", "valid", "test") for r in _read(one.out_dir, n)}
    _write(outputs / "gold-w2.jsonl", [_ours(s, "elder", idx=s) for s in range(100, 160)])
    more = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "c")))
    after = {_seed_of(r["messages"][0]["content"]): n for n in ("train", "valid", "test") for r in _read(more.out_dir, n)}
    assert all(after[s] == split for s, split in before.items())
    # A hash, not a shuffle: small sets stray from 80/10/10 (106 seeds: 94/9/3), large ones do not.
    buckets = [seed_bucket(f"seed-{i}", "lem-split-1") for i in range(5000)]
    shares = [sum(u < 0.8 for u in buckets), sum(0.8 <= u < 0.9 for u in buckets), sum(u >= 0.9 for u in buckets)]
    assert [round(n / 5000, 2) for n in shares] == pytest.approx([0.8, 0.1, 0.1], abs=0.015)


def test_few_seeds_still_give_a_valid_split() -> None:
    from lemcore.train.dataset import _Answer

    seeds = [f"S{i}" for i in range(3)]
    answers = [_Answer(0, i, "gold", s, "", i, f"p{i}", "a", False, "", i) for i, s in enumerate(seeds)]
    buckets = sorted(seed_bucket(s, "x") for s in seeds)
    notes: list[str] = []
    parts = split_by_seed(answers, (0.8, 0.1, 0.1), "x", notes)
    assert parts["valid"] and parts["train"], (buckets, notes)
    assert all(len({a.seed for a in parts[n]}) == len(parts[n]) for n in parts)


def test_the_labs_domain_split_is_row_number_modulo_ten() -> None:
    from lemcore.train.dataset import _Answer

    answers = [_Answer(0, i, "gold", f"S{i}", "Health", 19 - i, f"p{i}", "a", False, "", i) for i in range(20)]
    parts = split_by_domain(answers)
    rows = {n: sorted(a.idx + 1 for a in parts[n] if a.idx is not None) for n in parts}  # row number = idx + 1
    assert rows == {"train": [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 20], "test": [8, 18],
                    "valid": [9, 19]}


def test_domain_split_warns_about_families_across_splits(outputs: Path, tmp_path: Path) -> None:
    result = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "d"), split="domain"))
    assert result.card["split"]["method"] == "domain"
    assert any("more than one split" in w for w in result.warnings)
    with pytest.raises(ConfigError, match="fixed 8:1:1"):
        DatasetConfig(sources=("x",), out_dir="y", split="domain", ratios=(0.7, 0.2, 0.1)).validate()


def test_system_policy_keeps_the_sandwich_for_gold_only(outputs: Path, tmp_path: Path) -> None:
    text = sandwich_text()
    result = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "s"),
                                         prompt_policy="system", sandwich_text=text))
    rows = [r for n in ("train", "valid", "test") for r in _read(result.out_dir, n)]
    gold = [r for r in rows if r["messages"][0]["role"] == "system"]
    assert len(gold) == 80 and gold[0]["messages"][0]["content"] == text.strip()
    assert gold[0]["messages"][1]["role"] == "user" and "Consider this" not in gold[0]["messages"][1]["content"]
    assert len(rows) - len(gold) == 6  # expansion answers had no sandwich
    assert check_data(result.out_dir, mask_prompt=True).ok
    with pytest.raises(ConfigError, match="needs the sandwich"):
        DatasetConfig(sources=("x",), out_dir="y", prompt_policy="system").validate()


def test_lab_files_and_their_kinds(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    gold = [{"idx": s, "seed_id": f"L{s}", "domain": "Labor", "voice": "original", "prompt": f"Lab question {s}?",
             "response": _answer(s, 0), "gen_time": 2.0, "worker": "m3"} for s in range(12)]
    gemini = [{"seed_id": f"en_{s}", "region": "en", "domain": "Labor", "prompt": f"Gemini question {s}?",
               "response": _answer(s, 1), "gen_time": 1.0, "model": "gemini-3"} for s in range(12)]
    _write(lab / "gold-m3.jsonl", gold)
    _write(lab / "lem-gemini3-responses.jsonl", gemini + [{"not": "an answer"}])
    (lab / "lem-gemini3-responses.jsonl").write_text((lab / "lem-gemini3-responses.jsonl").read_text() + "{torn\n")
    result = build_dataset(DatasetConfig(sources=(str(lab),), out_dir=str(tmp_path / "out")))
    assert result.card["kinds"] == {"gold": 24}  # Gemini generators used the sandwich too
    assert result.card["filtered"]["not_an_answer"] == 1 and result.card["filtered"]["unreadable_line"] == 1
    assert result.card["filtered"]["truncation_unknown"] == 24
    assert any("do not record whether" in w for w in result.warnings)
    assert record_kind({"region": "en", "worker": "w", "idx": 3}, Path("x.jsonl")) == "expansion"
    assert record_kind({"kind": "expansion", "voice": "x"}, Path("gold-x.jsonl")) == "expansion"


def test_refusals_are_clear(outputs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_dataset(DatasetConfig(sources=(str(tmp_path / "nowhere"),), out_dir=str(tmp_path / "o")))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "busy")))
    built = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "re"))).out_dir
    with pytest.raises(ConfigError, match="rebuild it with overwrite"):
        build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(built)))
    build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(built), overwrite=True))
    bad = _write(tmp_path / "bad" / "gold-x.jsonl", [_ours(1, "original", idx=1, response="")])
    with pytest.raises(DataError, match=r"No answers are left to train on: 1 answer read; left out: 1 empty"):
        build_dataset(DatasetConfig(sources=(str(bad),), out_dir=str(tmp_path / "none")))


def test_evaluation_prompts_are_counted_and_can_be_left_out(tmp_path: Path) -> None:
    rows = [_ours(s, "original", idx=s) | {"seed_id": f"P{s + 1:02d}_X"} for s in range(30)]
    from lemcore.prompts import load_eval_prompts
    from lemcore.resources import seeds_dir

    real = [p.seed_id for p in load_eval_prompts(seeds_dir())][:10]
    for row, seed in zip(rows, real):
        row["seed_id"] = seed
    src = _write(tmp_path / "gold-e.jsonl", rows)
    counted = build_dataset(DatasetConfig(sources=(str(src),), out_dir=str(tmp_path / "a")))
    assert counted.card["filtered"]["on_evaluation_prompts"] == 10
    assert any("evaluation prompts" in w for w in counted.warnings)
    left_out = build_dataset(DatasetConfig(sources=(str(src),), out_dir=str(tmp_path / "b"), exclude_eval=True))
    assert left_out.card["filtered"]["evaluation_prompt"] == 10 and left_out.card["filtered"]["kept"] == 20


def test_lem_data_cli(outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.main import main

    assert main(["data", "check", "--show", "1"]) == 0  # default source: this computer's contributions
    out = capsys.readouterr().out
    assert "2 file(s), 91 answers read, 86 would be kept" in out and "refused, repeats itself in a loop: 1" in out
    assert "gold-w1.jsonl line 83: repeats itself in a loop" in out
    assert main(["data", "build", "--out", str(tmp_path / "ds"), "--ratios", "70/20/10"]) == 0
    out = capsys.readouterr().out
    assert "train /" in out and "Written to" in out and "lem train --data" in out
    card = json.loads((tmp_path / "ds" / CARD_JSON).read_text())
    assert card["split"]["ratios"] == pytest.approx([0.7, 0.2, 0.1])
    assert main(["data", "stats", str(tmp_path / "ds")]) == 0
    assert "lem train and mlx_lm lora can read this folder" in capsys.readouterr().out
    assert main(["data", "build", "--out", str(tmp_path / "ds")]) == 2
    assert "not empty" in capsys.readouterr().err
    # The lab's tier-1 rule: these 70-word plain answers earn no bonus (none over 100 words, no lists, no
    # first-person opinion), score 0 and fail it.
    assert main(["data", "check", "--tier1"]) == 0
    assert "87 would be kept" not in (out := capsys.readouterr().out) and "tier1 failed: 87" in out


def test_lem_train_defaults_to_the_builtin_model_on_built_data(outputs: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               uncompiled_mlx: None) -> None:
    from lemcore.cli.main import main
    from lemcore.models.catalog import ENTRIES
    from lemcore.models.embedded import embedded_model_dir

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(e.id in help_text for e in ENTRIES) and "Default: the built-in smollm2-135m" in help_text
    folder = build_dataset(DatasetConfig(sources=(str(outputs),), out_dir=str(tmp_path / "ds"))).out_dir
    # --print-command names a folder plain mlx-lm opens (the built-in model, converted if need be).
    assert main(["train", "--data", str(folder), "--print-command"]) == 0
    captured = capsys.readouterr()
    assert "No --model given: training the built-in model (smollm2-135m)" in captured.err
    command = captured.out.split()
    model_arg = Path(command[command.index("--model") + 1])
    assert model_arg == embedded_model_dir() and (model_arg / "config.json").is_file()
    # And it trains, with no --model, on the built folder: two steps of the lab's recipe.
    run = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--preset", "LEK recipe", "--iters", "2", "--batch-size", "1",
                 "--steps-per-eval", "2", "--val-batches", "1", "--max-seq-length", "256", "--num-layers", "2",
                 "--adapter-path", str(run)]) == 0, capsys.readouterr().err
    assert "Training smollm2-135m" in capsys.readouterr().out and (run / "adapters.safetensors").is_file()
