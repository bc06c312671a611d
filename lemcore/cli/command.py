"""How every `lem` subcommand ends: one "Error: ..." line for a LemError, 130 for a cancel, never a traceback."""

from __future__ import annotations

import argparse
import sys

from lemcore.errors import Cancelled, LemError


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand: a LemError prints one "Error: ..." line and exits 2, a cancel exits 130,
    and the user never sees a traceback."""
    try:
        return int(args.func(args) or 0)
    except Cancelled as err:
        print(str(err), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except LemError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
