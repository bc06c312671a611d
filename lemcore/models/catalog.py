"""The lab's recommended chat models, their sizes, and which one to pick for a machine.

Sizes are computed from parameter counts and bits so they are known offline: an mlx-lm 4-bit weight costs
4 bits plus a 16-bit scale and bias per group of 64 (4.5 bits). The mlx-community Gemma 3 builds also carry
the bf16 SigLIP vision tower, which is downloaded but dropped by mlx-lm on load: it counts toward the
download, not the memory. When online, `refresh_catalog` replaces the estimates with the hub's own figures
(file sizes and safetensors headers) and keeps them for later offline runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from lemcore.events import Event
from lemcore.hardware import GB, Hardware
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.downloads import hub_sizes
from lemcore.models.fit import KVShape, ModelNeeds
from lemcore.settings import data_dir

_VISION_PARAMS = 417_000_000  # SigLIP-400M + projector in the 4B/12B/27B builds
_GEMMA_TOKENIZER_BYTES = 38_000_000  # tokenizer.json (~33 MB) + tokenizer.model (~4.7 MB) + configs
SIZES_FILE = "catalog-sizes.json"


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    label: str
    repo: str
    params: int  # parameters of the text model mlx-lm runs
    bits: int  # weight bits (16 or 32: unquantized)
    context: int  # longest context the model supports
    kv: KVShape
    summary: str
    extra_params: int = 0  # downloaded, kept in bf16, dropped on load (vision tower)
    extra_files: int = 0  # tokenizer and config bytes
    group_size: int = 64
    embedded: bool = False  # ships with the app: never downloaded
    hub_weight_bytes: int | None = None  # from the hub's metadata (refresh_catalog), when known
    hub_download_bytes: int | None = None

    @property
    def bits_per_weight(self) -> float:
        return self.bits + 32 / self.group_size if self.bits < 16 else float(self.bits)

    @property
    def weight_bytes(self) -> int:
        if self.hub_weight_bytes:
            return self.hub_weight_bytes
        return int(self.params * self.bits_per_weight / 8)

    @property
    def download_bytes(self) -> int:
        if self.embedded:
            return 0
        if self.hub_download_bytes:
            return self.hub_download_bytes
        return int(self.params * self.bits_per_weight / 8) + self.extra_params * 2 + self.extra_files

    @property
    def download_label(self) -> str:
        """Download size as the hub and Finder show it (decimal GB; memory figures are binary GB)."""
        return "built in" if self.embedded else f"{self.download_bytes / 1e9:.1f} GB"

    def needs(self) -> ModelNeeds:
        source = ("the hub's metadata" if self.hub_weight_bytes
                  else f"{self.params / 1e9:.2f}B parameters at {self.bits_per_weight:g} bits")
        return ModelNeeds(self.label, self.weight_bytes, self.kv, source)


def _gemma(size: str, params: int, layers: int, kv_heads: int, head_dim: int, window: int, context: int,
           vision: bool, summary: str) -> CatalogEntry:
    global_layers = layers // 6  # every 6th layer is global; the rest keep a sliding window
    return CatalogEntry(
        id=f"gemma-3-{size.lower()}", label=f"Gemma 3 {size} (4-bit)",
        repo=f"mlx-community/gemma-3-{size.lower()}-it-qat-4bit", params=params, bits=4, context=context,
        kv=KVShape(layers, kv_heads, head_dim, 2, window, layers - global_layers), summary=summary,
        extra_params=_VISION_PARAMS if vision else 0, extra_files=_GEMMA_TOKENIZER_BYTES,
    )


EMBEDDED_ID = "smollm2-135m"
ENTRIES: tuple[CatalogEntry, ...] = (
    _gemma("1B", 999_885_952, 26, 1, 256, 512, 32_768, False,
           "Smallest Gemma: for machines with less than 8 GB of memory."),
    _gemma("4B", 3_880_000_000, 34, 4, 256, 1024, 131_072, True,
           "Good answers on an 8 GB Mac."),
    _gemma("12B", 11_770_000_000, 48, 8, 256, 1024, 131_072, True,
           "Better answers; wants a 16 GB Mac."),
    _gemma("27B", 27_010_000_000, 62, 16, 128, 1024, 131_072, True,
           "The lab's best; wants 32 GB or more."),
    CatalogEntry(
        id=EMBEDDED_ID, label="SmolLM2 135M (built in)", repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        # float32 is the CPU build and the largest one: the fit check stays on the safe side.
        params=134_515_008, bits=32, context=8192, kv=KVShape(30, 3, 64, 4), embedded=True,
        summary="Built in, no download: runs anywhere, including without a Mac GPU.",
    ),
)
_ALIASES = {"embedded": EMBEDDED_ID, "default": EMBEDDED_ID, "smollm2": EMBEDDED_ID}


@dataclass(frozen=True)
class CatalogRefreshed(Event):
    """One entry's sizes as the hub reports them (event of `refresh_catalog`)."""

    id: str
    weight_bytes: int
    download_bytes: int


@dataclass(frozen=True)
class Recommendation:
    entry: CatalogEntry
    reason: str


def sizes_path() -> Path:

    return data_dir() / SIZES_FILE


def catalog() -> list[CatalogEntry]:
    """The entries, with the hub's figures from the last `refresh_catalog` when there was one."""
    try:
        saved = json.loads(sizes_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    out = []
    for entry in ENTRIES:
        sizes = saved.get(entry.repo) if isinstance(saved, dict) else None
        if isinstance(sizes, dict) and not entry.embedded:
            entry = dataclasses.replace(entry, hub_weight_bytes=_int(sizes.get("weight_bytes")),
                                        hub_download_bytes=_int(sizes.get("download_bytes")))
        out.append(entry)
    return out


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def find_entry(name: str) -> CatalogEntry | None:
    """The entry whose id, alias or hub repo is `name` (case-insensitive), else None."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    for entry in catalog():
        if key in (entry.id, entry.repo.lower()):
            return entry
    return None


def recommend(hw: Hardware, backend: str) -> Recommendation:
    """The lab's table: no Metal -> built-in model; <8 GB -> 1B; 8 -> 4B; 16 -> 12B; 32 and up -> 27B.

    Thresholds sit a little below the nominal sizes because machines report slightly less than they have.
    """
    entries = {e.id: e for e in catalog()}
    ram = hw.total_ram / GB
    if backend != "Metal":
        why = "under Rosetta" if hw.rosetta else f"{backend} backend"
        return Recommendation(entries[EMBEDDED_ID], (
            f"No Metal GPU available ({why}): the built-in SmolLM2 135M runs well on the CPU; "
            "the Gemma models would be very slow here."))
    if ram >= 30:
        pick = "gemma-3-27b"
    elif ram >= 15:
        pick = "gemma-3-12b"
    elif ram >= 7.5:
        pick = "gemma-3-4b"
    else:
        pick = "gemma-3-1b"
    entry = entries[pick]
    return Recommendation(entry, f"This Mac has {ram:.0f} GB of memory: {entry.label} "
                                 f"(~{entry.download_label} download) is the lab's pick for it.")


def refresh_catalog(
    *,
    endpoint: str | None = None,
    timeout: float = 5.0,
    report: Report = no_report,
    cancel: CancelToken | None = None,
) -> list[CatalogEntry]:
    """Ask the hub for the real sizes of the downloadable entries and save them.

    Raises DownloadError offline; the saved (or built-in) figures stay in use."""

    path = sizes_path()
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    for entry in ENTRIES:
        if entry.embedded:
            continue
        if cancel is not None:
            cancel.check()
        weight, download = hub_sizes(entry.repo, endpoint=endpoint, timeout=timeout)
        saved[entry.repo] = {"weight_bytes": weight, "download_bytes": download}
        report(CatalogRefreshed(entry.id, weight, download))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=2), encoding="utf-8")
    tmp.replace(path)
    return catalog()
