"""Prompt-set loaders: our shipped seeds, the lab's formats and their quirks."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from lemcore.errors import DataError
from lemcore.prompts import (
    BadLine,
    PromptItem,
    eval_prompt_files,
    load_eval_prompts,
    load_expansion_prompts,
    load_gold_prompts,
    prompt_set_hash,
)
from lemcore.resources import seeds_dir

ID_PATTERN = re.compile(r"^P(\d{2,3})_[A-Z]+_[A-Z0-9_]+$")


def collect() -> tuple[list[BadLine], Callable[[BadLine], None]]:
    bad: list[BadLine] = []
    return bad, bad.append


def no_bad_lines(bad: BadLine) -> None:
    pytest.fail(f"unexpected bad line {bad}")


def test_shipped_eval_prompts_are_100_unique_across_10_plus_domains() -> None:
    bad, report = collect()
    items = load_eval_prompts(seeds_dir(), on_bad_line=report)
    assert bad == []
    assert [p.name for p in eval_prompt_files(seeds_dir())] == [
        "P01-P20.json",
        "P21-P40.json",
        "P41-P60.json",
        "P61-P80.json",
        "P81-P100.json",
    ]
    assert len(items) == 100
    numbers = [int(ID_PATTERN.match(i.seed_id).group(1)) for i in items]  # type: ignore[union-attr]
    assert numbers == list(range(1, 101))
    assert len({i.seed_id for i in items}) == 100
    assert len({i.prompt for i in items}) == 100
    domains = Counter(i.domain for i in items)
    assert len(domains) >= 10 and min(domains.values()) >= 5
    for item in items:
        assert item.seed_id.split("_")[1] == item.domain.upper()
        assert 80 <= len(item.prompt) <= 600


def test_shipped_gold_prompts_parse_with_five_plus_voices_per_seed() -> None:
    bad, report = collect()
    path = seeds_dir() / "gold-prompts.jsonl"
    items = load_gold_prompts(path, on_bad_line=report)
    assert bad == []
    assert len(items) == len(path.read_bytes().splitlines())
    assert [i.idx for i in items] == list(range(len(items)))
    for line in path.read_text(encoding="utf-8").splitlines():
        assert set(json.loads(line)) == {"seed_id", "domain", "voice", "prompt"}

    seeds = {i.seed_id: i for i in load_eval_prompts(seeds_dir())}
    voices: dict[str, set[str]] = defaultdict(set)
    for item in items:
        voices[item.seed_id].add(item.voice)
        seed = seeds[item.seed_id]
        assert item.domain == seed.domain
        if item.voice == "original":
            assert item.prompt == seed.prompt
        else:
            # A voice relays the whole seed and never turns it into a rewrite request.
            assert seed.prompt in item.prompt and item.prompt != seed.prompt
            assert "rewrite" not in item.prompt.lower()
    assert set(voices) == set(seeds)
    assert all(len(v) >= 5 and "original" in v for v in voices.values())
    assert len({i.prompt for i in items}) == len(items)


def test_gold_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    lines = [
        '{"seed_id": "A", "domain": "d", "voice": "original", "prompt": "one"}',
        "{broken",
        "",
        '["a list"]',
        '{"seed_id": "B", "domain": "d", "voice": "x"}',
        '{"seed_id": null, "prompt": "no id"}',
        '{"seed_id": 7, "prompt": "numeric id", "extra": 1}',
    ]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n\n\n")
    bad, report = collect()

    items = load_gold_prompts(path, on_bad_line=report)

    assert items == [
        PromptItem(0, "A", "d", "one", "original"),
        PromptItem(6, "7", "", "numeric id"),
    ]
    assert [(b.path, b.line_no) for b in bad] == [(path, 2), (path, 4), (path, 5), (path, 6), (path, 8)]
    assert "not valid JSON" in bad[0].reason and "prompt" in bad[2].reason and "seed_id" in bad[3].reason
    assert "not UTF-8" in bad[4].reason
    assert str(bad[0]).startswith(f"{path}:2: ")


def test_gold_bom_and_crlf_keep_indices_aligned(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    rows = [{"seed_id": f"S{n}", "domain": "d", "voice": "v", "prompt": f"p{n}"} for n in range(3)]
    body = "\r\n".join(json.dumps(r) for r in rows[:2]) + "\r\n\r\n" + json.dumps(rows[2]) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    items = load_gold_prompts(path, on_bad_line=no_bad_lines)
    assert [(i.idx, i.seed_id, i.prompt) for i in items] == [
        (0, "S0", "p0"),
        (1, "S1", "p1"),
        (3, "S2", "p2"),
    ]


def test_gold_without_callback_logs_and_continues(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text('oops\n{"seed_id": "A", "prompt": "p"}\n', encoding="utf-8")
    assert [i.seed_id for i in load_gold_prompts(path)] == ["A"]
    assert f"{path}:1" in caplog.text


def test_missing_or_unreadable_files_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_gold_prompts(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="folder"):
        load_expansion_prompts(tmp_path)
    with pytest.raises(DataError, match="No evaluation prompt files"):
        load_eval_prompts(tmp_path)
    broken = tmp_path / "P01-P20.json"
    broken.write_text('[{"id": 1, "prompt": "x"},\n  {oops}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2, column"):
        load_eval_prompts(broken)
    broken.write_text('{"id": 1}', encoding="utf-8")
    with pytest.raises(DataError, match="JSON list"):
        load_eval_prompts(broken)


def test_expansion_prompts_take_idx_from_field(tmp_path: Path) -> None:
    path = tmp_path / "expansion-prompts.jsonl"
    rows = [
        {"idx": 5, "seed_id": "en_1", "region": "en", "domain": "d", "prompt": "five"},
        {"idx": "2", "seed_id": 9, "region": "cn", "domain": "d", "prompt": "two"},
        {"idx": 5, "seed_id": "dup", "region": "en", "domain": "d", "prompt": "again"},
        {"seed_id": "x", "prompt": "no idx"},
        {"idx": 7.0, "seed_id": "en_3", "prompt": "seven", "priority": 1},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    bad, report = collect()
    items = load_expansion_prompts(path, on_bad_line=report)
    assert [(i.idx, i.seed_id, i.region, i.prompt) for i in items] == [
        (5, "en_1", "en", "five"),
        (2, "9", "cn", "two"),
        (7, "en_3", "", "seven"),
    ]
    assert [(b.line_no, b.reason.split()[0]) for b in bad] == [(3, "idx"), (4, "no")]


def test_lab_style_eval_file_quirks(tmp_path: Path) -> None:
    entries = [
        {"id": "P01_X_Y", "domain": "Identity", "prompt": "first"},
        {"id": 813, "ethic_tension": "typo key", "prompt": "int id, no domain"},
        {"id": 12.0, "domain": "D", "elastic_tension": "t", "prompt": "float id"},
        {"id": None, "domain": "D", "prompt": "null id"},
        {"id": "P05", "domain": "D", "ethical_tension": "nothing to ask"},
        {"id": 813, "domain": "D", "prompt": "repeated id"},
        {"context": "c", "region": "me", "scenarios": [{"id": "n1", "domain": "D", "prompt": "nested"}]},
    ]
    path = tmp_path / "P01-P20.json"
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    bad, report = collect()

    items = load_eval_prompts(path, on_bad_line=report)

    assert [(i.idx, i.seed_id, i.domain, i.region) for i in items] == [
        (0, "P01_X_Y", "Identity", ""),
        (1, "813", "", ""),
        (2, "12", "D", ""),
        (3, "P01-P20#4", "D", ""),
        (6, "n1", "D", "me"),
    ]
    starts = [n + 1 for n, line in enumerate(path.read_text().splitlines()) if line == "  {"]
    assert [(b.line_no, b.reason) for b in bad] == [
        (starts[4], "entry 5 has no 'prompt' text"),
        (starts[5], "id '813' already used at P01-P20.json:" + str(starts[1])),
    ]


def test_eval_files_in_folder_load_in_numeric_order_with_bom(tmp_path: Path) -> None:
    for first in (81, 1, 21):
        data = json.dumps([{"id": f"P{first:02d}_A_B", "domain": "A", "prompt": "p"}])
        (tmp_path / f"P{first:02d}-P{first + 19}.json").write_bytes(b"\xef\xbb\xbf" + data.encode())
    (tmp_path / "notes.json").write_text("not a P-file", encoding="utf-8")
    items = load_eval_prompts(tmp_path, on_bad_line=no_bad_lines)
    assert [i.seed_id for i in items] == ["P01_A_B", "P21_A_B", "P81_A_B"]
    assert [i.idx for i in items] == [0, 1, 2]


def test_prompt_set_hash_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    shipped = prompt_set_hash(seeds_dir())
    assert shipped == prompt_set_hash(seeds_dir()) and len(shipped) == 64
    path = tmp_path / "g.jsonl"
    path.write_text('{"seed_id": "A", "prompt": "p"}\n', encoding="utf-8")
    first = prompt_set_hash(path)
    path.write_text('{"seed_id": "A", "prompt": "q"}\n', encoding="utf-8")
    assert prompt_set_hash(path) != first
    with pytest.raises(DataError):
        prompt_set_hash(tmp_path / "absent.jsonl")
