"""``magtok`` command-line entry point.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``func``. Errors a user can fix (bad input, missing files, existing outputs) are
printed as one clear message with exit code 2, never a traceback (set MAGTOK_DEBUG=1 to see it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import torch

from magtok.cli.errors import UserError

SUBCOMMAND_MODULES = ("train", "demo", "tokenize", "eval")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magtok", description="MagViT2-style video tokenizer: train, "
                                     "tokenize, detokenize and evaluate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"magtok.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"magtok.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # subnormal floats make CPU convolutions up to ~50x slower and never matter for tokens
    torch.set_flush_denormal(True)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt:
        print("magtok: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
            NotADirectoryError, RuntimeError) as e:
        if os.environ.get("MAGTOK_DEBUG"):
            raise
        kind = "" if isinstance(e, (UserError, ValueError, RuntimeError)) else f"{type(e).__name__}: "
        print(f"magtok {args.command}: error: {kind}{e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
