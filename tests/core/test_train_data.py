"""Data checks: per-line errors with line numbers, counts, warnings (too small, train/valid overlap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lemcore.errors import DataError
from lemcore.train.data import check_data


def chat(prompt: str, reply: str = "A careful, honest answer.") -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def write(folder: Path, name: str, rows: list) -> None:  # type: ignore[type-arg]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write(folder, "train", [chat(f"Question number {i}?") for i in range(12)])
    write(folder, "valid", [chat(f"Held-out question {i}?") for i in range(4)])
    return folder


def test_good_chat_data_counts_examples_and_tokens(folder: Path, tiny_llama: Path) -> None:
    from mlx_lm import load

    _, tokenizer = load(str(tiny_llama))
    report = check_data(folder, tokenizer=tokenizer, batch_size=2, mask_prompt=True)
    assert report.ok and report.format == "chat" and report.warnings == ()
    train = report.splits["train"]
    assert train.examples == 12 and train.tokens and train.tokens > 12 * 5
    assert 0 < train.trained_tokens < train.tokens  # mask-prompt: only the reply is trained
    assert report.splits["valid"].examples == 4 and report.fingerprint


def test_without_tokenizer_structure_only(folder: Path) -> None:
    report = check_data(folder, batch_size=2)
    assert report.ok and report.splits["train"].tokens is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}]}', "valid.jsonl line 3: no assistant message"),
        ("{not json", "valid.jsonl line 3: not valid JSON"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "valid.jsonl line 3: message 1 has role 'bot'"),
        ('{"messages": []}', "valid.jsonl line 3: messages must be a non-empty list"),
        ('{"prompt": "a", "completion": "b"}', "valid.jsonl line 3: this line is completions data but the file"),
        ('{"question": "a"}', "valid.jsonl line 3: no messages, prompt/completion or text field"),
        ('[1, 2]', "valid.jsonl line 3: each line must be a JSON object"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}',
         "valid.jsonl line 3: the assistant message is empty"),
    ],
)
def test_bad_lines_are_named_by_file_and_line(folder: Path, line: str, message: str) -> None:
    write(folder, "valid", [chat("a"), chat("b"), line, chat("c")])
    report = check_data(folder, batch_size=1)
    assert not report.ok
    assert any(e.startswith(message) for e in report.errors), report.errors
    with pytest.raises(DataError, match="line 3"):
        report.raise_for_errors()


def test_mask_prompt_needs_the_reply_last_and_no_text_data(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    last_user = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                              {"role": "user", "content": "more?"}]}
    write(folder, "train", [chat("x"), last_user])
    report = check_data(folder, mask_prompt=True)
    assert "train.jsonl line 2: the last message must be the assistant's reply" in report.errors[0]
    write(folder, "train", [{"text": "plain text"}])
    assert "text data has no prompt to mask" in check_data(folder, mask_prompt=True).errors[0]
    assert check_data(folder, mask_prompt=False).ok


def test_completions_and_text_formats(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    write(folder, "train", [{"prompt": f"p{i}", "completion": "c"} for i in range(8)])
    assert check_data(folder, mask_prompt=True).format == "completions"
    write(folder, "train", [{"text": f"t{i}"} for i in range(8)])
    write(folder, "valid", [{"prompt": "p", "completion": "c"}])
    report = check_data(folder)
    assert report.format == "text"
    assert any("valid.jsonl is completions data but train.jsonl is text data" in e for e in report.errors)


def test_too_small_for_the_batch_is_an_error_and_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write(folder, "train", [chat(f"q{i}") for i in range(3)])
    write(folder, "valid", [chat("v")])
    report = check_data(folder, batch_size=2, iters=200)
    assert "valid.jsonl has 1 example(s) but the batch size is 2" in report.errors[0]
    assert any("only 3 examples for batch size 2" in w for w in report.warnings)
    assert any("pass over the 3 training examples 133 times" in w for w in report.warnings)
    report = check_data(folder, batch_size=4)
    assert report.errors[0].startswith("train.jsonl has 3 example(s) but the batch size is 4")


def test_train_valid_overlap_is_a_warning(folder: Path) -> None:
    write(folder, "valid", [chat("Question number 3?"), chat("  question   NUMBER 5? "), chat("New one?")])
    report = check_data(folder, batch_size=1)
    assert report.ok
    overlap = [w for w in report.warnings if "also appear in train.jsonl" in w]
    assert overlap and overlap[0].startswith("2 of 3 valid.jsonl prompts") and "lines 1, 2" in overlap[0]


def test_missing_files_blank_lines_and_long_examples(tmp_path: Path, tiny_llama: Path) -> None:
    from mlx_lm import load

    assert "does not exist" in check_data(tmp_path / "nowhere").errors[0]
    folder = tmp_path / "b"
    write(folder, "train", [chat("a"), "", chat("b " * 50)])
    _, tokenizer = load(str(tiny_llama))
    report = check_data(folder, tokenizer=tokenizer, max_seq_length=32)
    assert report.ok
    assert any("empty lines (2)" in w for w in report.warnings)
    assert any("No valid.jsonl" in w for w in report.warnings)
    assert any("1 example(s) in train.jsonl are longer than max_seq_length 32" in w for w in report.warnings)
    write(folder, "valid", [])
    assert "valid.jsonl: no examples" in check_data(folder).errors[0]
