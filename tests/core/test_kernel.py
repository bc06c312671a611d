"""The kernel loaders and the sandwich layout (which must match the lab's generator exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lemcore.contribute.kernel import (
    Axiom,
    Axioms,
    build_sandwich,
    default_kernel_paths,
    kernel_hash,
    load_axioms,
    load_kernel_text,
)
from lemcore.errors import ConfigError

TOY = {
    "framework": "toy",
    "version": "0.1",
    "axioms": [
        # Listed out of order on purpose: the sandwich follows id order, not file order.
        {"id": 2, "name": "beta", "statement": "Second rule.", "function": "f2", "resolution": "r2"},
        {"id": 1, "name": "alpha", "statement": "First rule.", "function": "f1", "resolution": "r1"},
    ],
}


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_sandwich_layout_is_exact(tmp_path: Path) -> None:
    axioms = load_axioms(write_json(tmp_path / "axioms.json", TOY))
    kernel = tmp_path / "kernel.txt"
    kernel.write_text("\n\n  KERNEL BODY\nline two  \n\n", encoding="utf-8")

    messages = build_sandwich(axioms, load_kernel_text(kernel), "Should I?")

    assert messages == [
        {
            "role": "system",
            "content": "You are guided by the following axioms of conscious interaction:\n\n"
            "Axiom 1 (alpha): First rule.\n\n"
            "Axiom 2 (beta): Second rule.\n\n",
        },
        {
            "role": "user",
            "content": "Should I?\n\n---\n\nConsider this ethical framework in your response:\n"
            "KERNEL BODY\nline two",
        },
    ]


def test_shipped_kernel_loads_with_five_complete_axioms() -> None:
    paths = default_kernel_paths()
    axioms = load_axioms(paths.axioms)
    assert [a.name for a in axioms.axioms] == ["sovereignty", "privacy", "transparency", "consent", "dignity"]
    assert [a.id for a in axioms.axioms] == [1, 2, 3, 4, 5]
    for axiom in axioms.axioms:
        assert 150 <= len(axiom.statement) <= 260, axiom.name
        assert 150 <= len(axiom.resolution) <= 200, axiom.name
        assert axiom.function and axiom.resolution.startswith("I ")
    doc = json.loads(paths.axioms.read_text(encoding="utf-8"))
    assert doc["license"] == "EUPL-1.2"
    assert doc["extensions"] == {"$ref": "./extensions/", "loaded": []}
    assert set(doc["meta"]) == {"override", "hierarchy", "nature", "description"}

    text = load_kernel_text(paths.text)
    assert 3_000 <= len(paths.text.read_bytes()) <= 6_000
    system = build_sandwich(axioms, text, "x")[0]["content"]
    assert system.count("\nAxiom ") == 5


def test_lab_style_concatenated_json_kernel_is_accepted_verbatim(tmp_path: Path) -> None:
    # The lab's kernel text is several JSON documents back to back: invalid JSON as a whole, used as-is.
    docs = [{"part": 1, ">>": "a"}, {"core": ["x", "y"]}, {"mode": "intrinsic"}, {"terms": {"t": "d"}}]
    body = "\n\n".join(json.dumps(d, indent=2) for d in docs)
    path = tmp_path / "lek-1-kernel.txt"
    path.write_text(body + "\n\n", encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text(encoding="utf-8"))

    assert load_kernel_text(path) == body
    user = build_sandwich(Axioms("t", "1", (Axiom(1, "a", "s"),)), load_kernel_text(path), "P")[1]
    assert user["content"].endswith(body)


def test_lab_shaped_axioms_without_optional_fields_load(tmp_path: Path) -> None:
    doc = {"framework": "f", "version": 1.1, "axioms": [{"id": 1, "name": "n", "statement": "s"}]}
    axioms = load_axioms(write_json(tmp_path / "a.json", doc))
    assert axioms.version == "1.1"
    assert axioms.axioms == (Axiom(1, "n", "s", "", ""),)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON (line 1"),
        ("[]", "one JSON object"),
        (json.dumps({"version": "1", "axioms": [{"id": 1, "name": "n", "statement": "s"}]}), "'framework'"),
        (json.dumps({"framework": "f", "version": "1", "axioms": []}), "non-empty 'axioms'"),
        (
            json.dumps({"framework": "f", "version": "1", "axioms": [{"id": 1, "name": "n"}]}),
            "'statement' in axiom 1",
        ),
        (
            json.dumps(
                {"framework": "f", "version": "1", "axioms": [{"id": "1", "name": "n", "statement": "s"}]}
            ),
            "whole-number 'id'",
        ),
        (
            json.dumps(
                {"framework": "f", "version": "1", "axioms": [{"id": 1, "name": "n", "statement": "s"}] * 2}
            ),
            "repeats axiom id",
        ),
    ],
)
def test_bad_axioms_files_raise_config_error_naming_file(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad-axioms.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_axioms(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "Settings" in message


def test_missing_and_empty_kernel_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_axioms(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_kernel_text(tmp_path / "nope.txt")
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        load_kernel_text(blank)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"abc\x00def")
    with pytest.raises(ConfigError, match="binary"):
        load_kernel_text(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_kernel_text(latin)


def test_bom_and_crlf_kernel_text(tmp_path: Path) -> None:
    path = tmp_path / "k.txt"
    path.write_bytes(b"\xef\xbb\xbf  body\r\nmore\r\n")
    assert load_kernel_text(path) == "body\r\nmore"


def test_kernel_hash_tracks_both_files(tmp_path: Path) -> None:
    a, k = tmp_path / "a.json", tmp_path / "k.txt"
    a.write_bytes(b"AB")
    k.write_bytes(b"C")
    first = kernel_hash(a, k)
    assert len(first) == 64 and kernel_hash(a, k) == first
    # Moving a byte between files must change the hash (plain concatenation would not notice).
    a.write_bytes(b"A")
    k.write_bytes(b"BC")
    assert kernel_hash(a, k) != first
    with pytest.raises(ConfigError):
        kernel_hash(a, tmp_path / "missing.txt")
