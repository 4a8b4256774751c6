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
STREAMING_COMMANDS = {"tokenize", "detokenize", "reconstruct", "tokenize-dataset"}


def limit_heap_fragmentation() -> bool:
    """Serve allocations >= 64 KiB with mmap (glibc ``M_MMAP_THRESHOLD``), so memory freed between
    streaming chunks goes back to the OS instead of fragmenting the heap. Measured: the streaming
    peak at 1025 frames drops from 1.30x to 1.09x of the 17-frame peak (BENCHMARKS.md, Streaming).
    A no-op where glibc is not available."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 65536))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False



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
    if args.command in STREAMING_COMMANDS:
        limit_heap_fragmentation()
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
