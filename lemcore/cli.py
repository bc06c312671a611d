"""`lem`: the command line over the same engine functions the GUI calls."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence

from lemcore.errors import Cancelled, LemError


def _cmd_doctor(args: argparse.Namespace) -> int:
    from lemcore.doctor import format_checks, run_checks

    checks = run_checks()
    print(format_checks(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def _cmd_login(args: argparse.Namespace) -> int:
    from lemcore.secrets import KeyringTokenStore

    token = sys.stdin.readline().strip() if args.stdin else getpass.getpass("Paste the lab's token: ")
    KeyringTokenStore().set(token)
    print("Token saved in the system keychain.")
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    from lemcore.secrets import KeyringTokenStore

    KeyringTokenStore().delete()
    print("Token removed from the system keychain.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lem", description="LEM Desktop engines from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="check this machine: OS, chip, memory, MLX, keychain, server")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("login", help="save the lab's InfluxDB token in the system keychain")
    p.add_argument("--stdin", action="store_true", help="read the token from standard input")
    p.set_defaults(func=_cmd_login)

    p = sub.add_parser("logout", help="remove the saved token from the keychain")
    p.set_defaults(func=_cmd_logout)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Engine subcommands live next to their engines; each module adds its own parsers."""
    from lemcore import cli_bench, cli_contribute, cli_models, cli_train

    return [cli_models.register, cli_contribute.register, cli_train.register, cli_bench.register]


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        from lemcore.blas import reexec_with_openblas

        reexec_with_openblas()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return run_command(args)


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


if __name__ == "__main__":
    sys.exit(main())
