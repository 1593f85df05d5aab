"""The ``spectral-ray`` command line. Each command group lives in its own module with
``add_parser(subparsers)``; heavy imports (torch, ray, trainables, analysis) happen inside the
command that needs them, so ``--help`` and ``validate`` stay fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# the command-group modules, each with add_parser(subparsers), in --help order
COMMAND_MODULES = ["psd", "data", "sweep", "schema", "report", "risk"]


class UserError(Exception):
    """An error in what the user asked for: printed as one paragraph, exit code 2, no traceback."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spectral-ray")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectral-ray",
        description="Sweeps over frequency learning priorities and shortcut robustness in medical transfer learning.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"spectral_ray.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"spectral-ray {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
