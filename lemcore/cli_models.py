"""`lem models ...` subcommands."""

from __future__ import annotations

import argparse
import sys


def _print_progress(event) -> None:  # type: ignore[no-untyped-def]
    stage = getattr(event, "stage", "")
    done, total = getattr(event, "done", 0), getattr(event, "total", 0)
    if total:
        print(f"\r{stage}: {done}/{total}", end="", file=sys.stderr, flush=True)


def _cmd_convert_embedded(args: argparse.Namespace) -> int:
    from lemcore.embedded_model import ensure_embedded_model

    path = ensure_embedded_model(args.dtype, report=_print_progress)
    print(f"\nEmbedded model ready: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list, download and convert models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    p = msub.add_parser("convert-embedded", help="convert the bundled SmolLM2-135M-Instruct into an MLX folder")
    p.add_argument("--dtype", choices=["float32", "4bit"], default=None,
                   help="float32 (fast on Linux CPU) or 4bit (Mac default)")
    p.set_defaults(func=_cmd_convert_embedded)
    models.set_defaults(func=lambda a: (models.print_help(), 0)[1])
