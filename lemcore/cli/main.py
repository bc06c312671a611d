"""`lem`: the command line over the same engine functions the GUI calls."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence

from lemcore.blas import reexec_with_openblas
from lemcore.cli import bench, contribute, data, judge, loop, models, train
from lemcore.cli.command import run_command
from lemcore.cli.doctor import format_checks, host_checks, run_checks
from lemcore.secrets import KeyringTokenStore


def _cmd_doctor(args: argparse.Namespace) -> int:
    hosts = train.host_list(args)
    checks = run_checks() if hosts is None else \
        host_checks(hosts, model=args.model or "", data=args.data or "", port=args.port)
    print(format_checks(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def _cmd_login(args: argparse.Namespace) -> int:
    token = sys.stdin.readline().strip() if args.stdin else getpass.getpass("Paste the lab's token: ")
    KeyringTokenStore().set(token)
    print("Token saved in the system keychain.")
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    KeyringTokenStore().delete()
    print("Token removed from the system keychain.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lem", description="LEM Desktop engines from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="check this machine: OS, chip, memory, MLX, keychain, server; with --hosts, "
                       "the machines of a multi-machine training run")
    train.add_host_flags(p)
    p.add_argument("--model", help="with --hosts: check that every machine has this model")
    p.add_argument("--data", help="with --hosts: check that every machine has this data folder")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("login", help="save the lab's InfluxDB token in the system keychain")
    p.add_argument("--stdin", action="store_true", help="read the token from standard input")
    p.set_defaults(func=_cmd_login)

    p = sub.add_parser("logout", help="remove the saved token from the keychain")
    p.set_defaults(func=_cmd_logout)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    """Engine subcommands live next to their engines; each module adds its own parsers."""
    return [models.register, contribute.register, data.register, train.register, bench.register, loop.register,
            judge.register]


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        reexec_with_openblas()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
