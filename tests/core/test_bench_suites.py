"""Suite loaders (public formats and the lab's files), reproducible stratified subsamples, hub fetch offline."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from lemcore.benchmarks.suites import (
    SUITE_IDS,
    BenchItem,
    SuiteDownloadError,
    fetch_suite,
    file_format,
    guess_suite_id,
    load_suite,
    subsample,
    suite_module,
)
from lemcore.errors import ConfigError, DataError, DownloadError
from tests.bench_items import (
    DNA_ITEMS,
    write_do_not_answer,
    write_gsm8k,
    write_toxigen,
    write_truthfulqa,
    write_truthfulqa_mc,
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


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_each_suites_file_example_is_read_by_its_reader(suite_id: str, tmp_path: Path) -> None:
    """The example line every error message shows is a file the suite really reads."""
    example = suite_module(suite_id).FILE_EXAMPLE
    assert "\n" not in example and isinstance(json.loads(example), dict)  # one JSON line
    path = tmp_path / "one.jsonl"
    path.write_text(example + "\n", encoding="utf-8")
    suite = load_suite(suite_id, path)
    assert suite.total == 1 and suite.items[0].question
    assert example in file_format(suite_id) and suite_module(suite_id).FIELDS in file_format(suite_id)


# The lab's 50-item question files as they are (`id`, `benchmark` and the suite's own fields; TruthfulQA's
# answer lists as Python-repr strings), in fixtures of our own: their ids are kept, nothing is skipped.
LAB_FILES = {"gsm8k": (lambda p: write_gsm8k(p, lab=True), "GSM8K_", 10),
             "truthfulqa": (lambda p: write_truthfulqa(p, lab=True), "TRUTHQA_", 4),
             "do_not_answer": (write_do_not_answer, "DNA_", 4),
             "toxigen": (write_toxigen, "TOXIGEN_", 3)}


@pytest.mark.parametrize("suite_id", sorted(LAB_FILES))
def test_the_labs_question_files_load_as_they_are(suite_id: str, tmp_path: Path) -> None:
    write, prefix, count = LAB_FILES[suite_id]
    path = write(tmp_path / f"{suite_id}.jsonl")
    assert all(json.loads(line)["benchmark"] == suite_id for line in path.read_text().splitlines())
    problems: list[str] = []
    suite = load_suite(suite_id, path, on_bad=problems.append)
    assert problems == [] and suite.total == count
    assert [i.id for i in suite.items] == [f"{prefix}{n:03d}" for n in range(1, count + 1)]


def test_wrong_file_and_unknown_suite_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no usable truthfulqa questions") as err:
        load_suite("truthfulqa", write_gsm8k(tmp_path / "g.jsonl"))
    text = str(err.value)  # names the suite and its fields, and shows one line of the right format
    assert "TruthfulQA" in text and suite_module("truthfulqa").FIELDS in text
    assert text.endswith(suite_module("truthfulqa").FILE_EXAMPLE)
    with pytest.raises(DataError, match="no usable truthfulqa_mc questions") as err:
        load_suite("truthfulqa_mc", write_gsm8k(tmp_path / "g.jsonl"))
    assert "mc1_targets" in str(err.value) and str(err.value).endswith(suite_module("truthfulqa_mc").FILE_EXAMPLE)
    with pytest.raises(ConfigError, match="Choose one of"):
        load_suite("mmlu", tmp_path / "g.jsonl")
    with pytest.raises(DataError, match="does not exist") as err:
        load_suite("gsm8k", tmp_path / "missing.jsonl")
    assert "for example" not in str(err.value)  # a wrong path is not a format problem


def test_unreadable_files_say_the_format(tmp_path: Path) -> None:
    """A binary file, a broken JSON list, a JSON object instead of a list: each a DataError with the format."""
    binary = tmp_path / "gsm8k.jsonl"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00zipped")
    broken = tmp_path / "tqa.json"
    broken.write_text("[{\"question\": ", encoding="utf-8")
    single = tmp_path / "dna.json"
    single.write_text(json.dumps({"question": "one"}), encoding="utf-8")
    for suite_id, path, what in (("gsm8k", binary, "not a text file"), ("truthfulqa_mc", broken, "not valid JSON"),
                                 ("do_not_answer", single, "must hold a JSON list")):
        with pytest.raises(DataError, match=what) as err:
            load_suite(suite_id, path)
        assert str(err.value).endswith(suite_module(suite_id).FILE_EXAMPLE), err.value


def test_cli_wrong_format_prints_the_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.main import main

    questions = write_truthfulqa_mc(tmp_path / "mc.jsonl", count=3)
    assert main(["bench", "smollm2-135m", "--suite", f"gsm8k={questions}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "no usable gsm8k questions" in err[0]
    assert "question, answer" in err[0] and err[0].endswith(suite_module("gsm8k").FILE_EXAMPLE)


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
    with pytest.raises(DownloadError, match=r"not in the local cache.*--suite gsm8k=PATH") as err:
        fetch_suite("gsm8k", cache_dir=tmp_path)
    _says_the_format(err.value, "gsm8k")


def test_fetch_with_the_hub_unreachable_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="--suite truthfulqa=PATH") as err:
        fetch_suite("truthfulqa", cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{_closed_port()}")
    _says_the_format(err.value, "truthfulqa")


def test_cli_offline_names_the_suite_fields_and_an_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import constants

    from lemcore.cli.main import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["bench", "smollm2-135m", "--suite", "truthfulqa_mc"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("Error: The TruthfulQA multiple choice")
    assert "--suite truthfulqa_mc=PATH" in err and "mc1_targets {choices, labels}" in err
    assert err.endswith(suite_module("truthfulqa_mc").FILE_EXAMPLE)


def _says_the_format(err: BaseException, suite_id: str) -> None:
    """The command line's text and the window's both name the suite and its fields and end with the example;
    the window's names no command-line flag or environment variable."""
    assert isinstance(err, SuiteDownloadError)
    module = suite_module(suite_id)
    for text in (str(err), err.for_window):
        assert module.TITLE in text and module.FIELDS in text and text.endswith(module.FILE_EXAMPLE), text
    assert "--suite" not in err.for_window and "HF_HUB" not in err.for_window and "`" not in err.for_window


def test_ethics_has_no_hub_copy() -> None:
    with pytest.raises(ConfigError, match="not on the dataset hub"):
        fetch_suite("ethics")
