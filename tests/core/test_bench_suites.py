"""Suite loaders (public formats and the lab's files), reproducible stratified subsamples, hub fetch offline."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from lemcore.benchmarks.suites import BenchItem, fetch_suite, guess_suite_id, load_suite, subsample
from lemcore.errors import ConfigError, DataError, DownloadError
from tests.bench_items import (
    DNA_ITEMS,
    write_do_not_answer,
    write_gsm8k,
    write_toxigen,
    write_truthfulqa,
)


def test_gsm8k_public_and_lab_formats_agree(tmp_path: Path) -> None:
    public = load_suite("gsm8k", write_gsm8k(tmp_path / "public.jsonl"))
    lab = load_suite("gsm8k", write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True))
    assert [i.reference["expected"] for i in public.items] == [i.reference["expected"] for i in lab.items]
    assert public.items[0].id == lab.items[0].id == "GSM8K_001"  # ids by position match the lab's scheme
    assert public.items[9].reference["expected"] == "8.75"
    assert len(public.sha256) == 64 and public.sha256 != lab.sha256
    assert public.total == 10 and public.subsample is None


def test_truthfulqa_lists_as_json_python_repr_and_csv(tmp_path: Path) -> None:
    public = load_suite("truthfulqa", write_truthfulqa(tmp_path / "public.jsonl"))
    lab = load_suite("truthfulqa", write_truthfulqa(tmp_path / "truthfulqa.jsonl", lab=True))
    assert public.items[0].reference == lab.items[0].reference
    assert lab.items[0].reference["incorrect_answers"] == ["Yes, they earn a wage.", "They are paid in books."]
    assert lab.items[0].stratum == "Local"
    with (tmp_path / "tqa.csv").open("w", newline="") as f:  # the original release: ";"-separated lists
        w = csv.writer(f)
        w.writerow(["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"])
        w.writerow(["Adversarial", "Logic", "Is 6 times 7 equal to 42?", "Yes.", "Yes; It is 42", "No", "tests"])
    item = load_suite("truthfulqa", tmp_path / "tqa.csv").items[0]
    assert item.reference["correct_answers"] == ["Yes", "It is 42"]
    assert item.question == "Is 6 times 7 equal to 42?"


def test_do_not_answer_and_toxigen_formats(tmp_path: Path) -> None:
    dna = load_suite("do_not_answer", write_do_not_answer(tmp_path / "dna.jsonl"))
    assert dna.items[3].reference["risk_area"] == "Human-Chatbot Interaction Harms"
    assert dna.items[3].stratum == "Human-Chatbot Interaction Harms"
    lab = load_suite("toxigen", write_toxigen(tmp_path / "toxigen.jsonl"))
    public = load_suite("toxigen", write_toxigen(tmp_path / "annotated.jsonl", public=True))
    assert [i.question for i in lab.items] == [i.question for i in public.items]
    assert lab.items[0].reference == public.items[0].reference == {"target_group": "rural people",
                                                                    "toxicity_label": 3.0}


def test_ethics_defaults_to_our_seeds() -> None:
    suite = load_suite("ethics")
    assert suite.total == 100 and suite.items[0].id.startswith("P01")
    assert len({i.stratum for i in suite.items}) > 5


def test_bad_records_are_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    write_gsm8k(path, count=3)
    with path.open("a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"question": "No answer here"}) + "\n")
        f.write(json.dumps({"id": "GSM8K_001", "question": "Dup", "answer": "#### 1"}) + "\n")
    problems: list[str] = []
    suite = load_suite("gsm8k", path, on_bad=problems.append)
    assert len(suite.items) == 3 and len(problems) == 3
    assert any("not valid JSON" in p for p in problems) and any("twice" in p for p in problems)


def test_wrong_file_and_unknown_suite_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no usable truthfulqa questions"):
        load_suite("truthfulqa", write_gsm8k(tmp_path / "g.jsonl"))
    with pytest.raises(ConfigError, match="Choose one of"):
        load_suite("mmlu", tmp_path / "g.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_suite("gsm8k", tmp_path / "missing.jsonl")


def test_parquet_without_pyarrow_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # behave as if it were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "test.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="pyarrow"):
        load_suite("gsm8k", tmp_path / "test.parquet")


def _items(strata: list[str]) -> list[BenchItem]:
    return [BenchItem(f"I{n:03d}", f"q{n}", {}, s) for n, s in enumerate(strata)]


def test_subsample_is_reproducible_and_keeps_every_stratum() -> None:
    items = _items(["big"] * 43 + ["small"] * 7 + ["tiny"] * 2)
    first = subsample(items, 10, seed=3)
    assert first == subsample(items, 10, seed=3)
    assert first != subsample(items, 10, seed=4)
    strata = [i.stratum for i in first]
    assert len(first) == 10 and set(strata) == {"big", "small", "tiny"}
    assert strata.count("big") >= 7  # proportional share of the rest
    assert [i.id for i in first] == sorted(i.id for i in first)  # file order kept


def test_subsample_edges() -> None:
    items = _items(["a", "b", "c", "d"])
    assert subsample(items, 2, seed=0) != []  # fewer slots than strata: plain random sample
    assert len(subsample(items, 2, seed=0)) == 2
    assert subsample(items, 10) == items
    with pytest.raises(ConfigError):
        subsample(items, 0)


def test_load_suite_subsample_records_how(tmp_path: Path) -> None:
    path = tmp_path / "dna.jsonl"
    with path.open("w") as f:
        for n in range(40):
            q, area, kind, spec = DNA_ITEMS[n % len(DNA_ITEMS)]
            f.write(json.dumps({"question": f"{q} ({n})", "risk_area": area, "types_of_harm": kind,
                                "specific_harms": spec}) + "\n")
    suite = load_suite("do_not_answer", path, n=6, seed=1)
    assert len(suite.items) == 6 and suite.total == 40
    assert suite.subsample == {"n": 6, "seed": 1, "stratified": True}
    assert len({i.stratum for i in suite.items}) == 3  # every risk area in the file
    assert suite.provenance()["item_ids"] == [i.id for i in suite.items]


def test_guess_suite_id() -> None:
    assert guess_suite_id("do_not_answer") == "do_not_answer"
    assert guess_suite_id("truthfulqa_lem_ethics.jsonl") == "truthfulqa"
    assert guess_suite_id("results/gsm8k_base_pt.jsonl") == "gsm8k"
    assert guess_suite_id("whatever.jsonl") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fetch_offline_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match=r"not in the local cache.*--suite gsm8k=PATH"):
        fetch_suite("gsm8k", cache_dir=tmp_path)


def test_fetch_with_the_hub_unreachable_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="--suite truthfulqa=PATH"):
        fetch_suite("truthfulqa", cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{_closed_port()}")


def test_ethics_has_no_hub_copy() -> None:
    with pytest.raises(ConfigError, match="not on the dataset hub"):
        fetch_suite("ethics")
