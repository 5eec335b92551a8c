"""The ``mefn`` command.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` (argument definitions only; no heavy imports) and
``run(args) -> int`` (the work; imports torch, MONAI, SimpleITK inside). ``mefn --help``
therefore answers without loading any of them.

Exit codes: 0 success, 1 runtime failure, 2 usage error (bad arguments, bad input paths,
bad configuration).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import types
from collections.abc import Sequence

from mefn import __version__

# Module names under mefn.cli, in the order they appear in --help.
SUBCOMMANDS: tuple[str, ...] = (
    "segment",
    "info",
    "convert",
    "evaluate",
    "calibrate",
    "report",
    "phantoms",
    "train",
    "finetune",
    "review",
    "demo",
)


def _available_modules() -> list[types.ModuleType]:
    modules = []
    for name in SUBCOMMANDS:
        try:
            modules.append(importlib.import_module(f"mefn.cli.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"mefn.cli.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mefn",
        description=(
            "PET/CT tumour segmentation with voxel-wise uncertainty "
            "(Multi-modal Evidential Fusion Network)."
        ),
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"mefn {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks and debug logs on errors"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _available_modules():
        module.add_parser(sub)  # type: ignore[attr-defined]
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mefn")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mefn`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # to start it again (train)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.debug, args.quiet)
    from mefn.errors import MefnError, one_line

    try:
        code = args.func(args)
    except MefnError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"mefn {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mefn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"mefn {args.command}: internal error: {type(exc).__name__}: {one_line(exc, 300)} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
