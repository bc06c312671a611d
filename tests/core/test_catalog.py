"""The catalog: sizes from parameter counts, the lab's RAM table, hub refresh, and `lem models list`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lemcore.errors import DownloadError
from lemcore.hardware import GB, Hardware
from lemcore.models.catalog import EMBEDDED_ID, catalog, find_entry, recommend, refresh_catalog
from tests import hub_server
from tests.hub_server import HubServer

hf_cache = hub_server.hf_cache  # fixture shared through tests/hub_server.py
hub_online = hub_server.hub_online  # fixture shared through tests/hub_server.py

ROOT = Path(__file__).resolve().parents[2]


def machine(ram_gb: float, *, rosetta: bool = False) -> Hardware:
    # Macs report exactly their nominal memory; Linux reports a little less (e.g. 15.5 of 16): test both.
    return Hardware("macOS 15", "Apple M2", True, rosetta, int(ram_gb * GB), int(ram_gb * GB))


@pytest.mark.parametrize(("ram", "expected"), [
    (4, "gemma-3-1b"), (8, "gemma-3-4b"), (16, "gemma-3-12b"), (32, "gemma-3-27b"), (64, "gemma-3-27b"),
    (7.8, "gemma-3-4b"), (15.6, "gemma-3-12b"), (31.3, "gemma-3-27b"), (6, "gemma-3-1b"),
])
def test_recommendation_follows_the_labs_table(ram: float, expected: str) -> None:
    rec = recommend(machine(ram), "Metal")
    assert rec.entry.id == expected
    assert f"{ram:.0f} GB" in rec.reason and rec.entry.label in rec.reason


@pytest.mark.parametrize("backend", ["CPU", "CUDA", "not installed"])
def test_no_metal_gets_the_built_in_model(backend: str) -> None:
    for ram in (4, 16, 64):
        rec = recommend(machine(ram), backend)
        assert rec.entry.id == EMBEDDED_ID and rec.entry.embedded
        assert backend in rec.reason
    assert "Rosetta" in recommend(machine(16, rosetta=True), "CPU").reason


def test_sizes_computed_from_parameters_and_bits() -> None:
    entries = {e.id: e for e in catalog()}
    # The rough figures: 0.7, 3, 8 and 16 GB downloads for the 4-bit builds.
    for entry_id, rough in (("gemma-3-1b", 0.7), ("gemma-3-4b", 3), ("gemma-3-12b", 8), ("gemma-3-27b", 16)):
        entry = entries[entry_id]
        assert entry.download_bytes / 1e9 == pytest.approx(rough, rel=0.2), entry_id
        assert entry.bits == 4 and entry.bits_per_weight == 4.5
        assert entry.weight_bytes == int(entry.params * 4.5 / 8)
        assert entry.repo == f"mlx-community/{entry_id}-it-qat-4bit"
    # The vision tower is downloaded but never loaded: memory < download for 4B and up.
    assert entries["gemma-3-4b"].weight_bytes < entries["gemma-3-4b"].download_bytes - 0.8e9
    embedded = entries[EMBEDDED_ID]
    assert embedded.download_bytes == 0 and embedded.repo == "HuggingFaceTB/SmolLM2-135M-Instruct"
    ids = ["gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b", EMBEDDED_ID]
    assert [e.id for e in catalog()] == ids


def test_find_entry_by_id_alias_or_repo() -> None:
    assert find_entry("gemma-3-4b").id == "gemma-3-4b"
    assert find_entry("MLX-Community/Gemma-3-27b-it-qat-4bit").id == "gemma-3-27b"
    assert find_entry("embedded").id == EMBEDDED_ID
    assert find_entry("someone/else") is None


def test_refresh_takes_sizes_from_the_hub_and_keeps_them(hub_online: Path, tiny_gemma: Path) -> None:
    files = {p.name: p.read_bytes() for p in tiny_gemma.iterdir()}
    repos = {e.repo: files for e in catalog() if not e.embedded}
    with HubServer(repos) as hub:
        refreshed = {e.id: e for e in refresh_catalog(endpoint=hub.url)}
    weights = (tiny_gemma / "model.safetensors").stat().st_size
    one = refreshed["gemma-3-1b"]
    assert one.download_bytes == sum(len(b) for b in files.values())
    assert 0 < one.weight_bytes < weights  # tensor bytes from the header, without the header itself
    assert "hub" in one.needs().source
    # Saved for later, offline runs.
    assert {e.id: e.weight_bytes for e in catalog()} == {e.id: e.weight_bytes for e in refreshed.values()}


def test_refresh_offline_fails_fast_and_keeps_estimates(hf_cache: Path) -> None:
    before = catalog()
    start = time.monotonic()
    with pytest.raises(DownloadError, match="built-in model"):
        refresh_catalog()
    assert time.monotonic() - start < 3
    assert catalog() == before


def _lem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lemcore.cli.main", "models", *args], check=False, cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_lem_models_list_shows_catalog_verdicts_and_the_built_in_model(hf_cache: Path) -> None:
    from lemcore.models.embedded import ensure_embedded_model

    ensure_embedded_model()  # cached across test sessions ($LEM_MODEL_CACHE): the built-in model is ready
    out = _lem("list")
    assert out.returncode == 0, out.stderr
    row = _rows(out.stdout)
    assert set(row) == {e.id for e in catalog()}, out.stdout
    assert row[EMBEDDED_ID].startswith("*") and row[EMBEDDED_ID].rstrip().endswith("ready")
    assert "not downloaded" in row["gemma-3-4b"]
    assert any(v in row["gemma-3-12b"] for v in ("green", "yellow", "red"))
    assert "needs ~" in out.stdout and "can give ~" in out.stdout
    assert "Recommended: smollm2-135m" in out.stdout

    out = _lem("list", "--ram", "16", "--backend", "Metal")
    assert out.returncode == 0, out.stderr
    assert "Recommended: gemma-3-12b" in out.stdout
    row = _rows(out.stdout)
    assert row["gemma-3-12b"].startswith("*") and " red " in row["gemma-3-27b"]


def _rows(stdout: str) -> dict[str, str]:
    """Table rows by model id: `*` (recommended) or a space, then the id."""
    rows = {}
    for line in stdout.splitlines():
        if (m := re.match(r"^[* ] +([a-z0-9.-]+) {2,}\S", line)) and m[1] != "ID":
            rows[m[1]] = line
    return rows
