"""``magtok`` command-line entry point.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``func``. Only the invoked subcommand's module is imported (``magtok --help`` and
``magtok train --help`` never import torch's heavy parts), so the table ``COMMANDS`` names each
command's module and one-line help; ``tests/cli_train`` checks it against what the modules register.

Errors: magtok's own user-error type (:class:`magtok.errors.UserError`) is printed as one line that
names the problem and the fix, with exit code 2 (set MAGTOK_DEBUG=1 to see the traceback). Anything
else is a bug, an out-of-memory or a broken install, and shows its full traceback (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from magtok.cli.errors import UserError

# command -> (module under magtok.cli, one-line help shown by `magtok --help`). A module with a
# `register` function that is not listed here still works (the slow path imports every module).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a tokenizer from a YAML recipe"),
    "demo": ("demo", "reconstruct a held-out clip with magtok-small, then train the demo preset"),
    "tokenize": ("tokenize", "videos -> token files"),
    "detokenize": ("tokenize", "token file -> video"),
    "reconstruct": ("tokenize", "video -> tokens -> video, with PSNR / SSIM"),
    "manifest": ("dataset", "probe videos in parallel -> manifest.parquet"),
    "tokenize-dataset": ("dataset", "a folder or manifest of videos -> Parquet token shards"),
    "info": ("info", "describe a model folder, a token file or a shard folder"),
    "eval": ("eval", "measure reconstruction quality of a tokenizer on a folder of videos"),
}


def subcommand_modules() -> tuple[str, ...]:
    """Every module of magtok.cli with a ``register(subparsers)`` function, the table's first."""
    import pkgutil
    from pathlib import Path

    names = list(dict.fromkeys(m for m, _ in COMMANDS.values()))
    here = Path(__file__).resolve().parent
    for info in pkgutil.iter_modules([str(here)]):
        if info.name in names or info.name in ("main", "errors", "runtime", "common") or info.name.startswith("_"):
            continue
        if "def register(" in (here / f"{info.name}.py").read_text(errors="replace"):
            names.append(info.name)
    return tuple(names)


STREAMING_COMMANDS = {"tokenize", "detokenize", "reconstruct", "tokenize-dataset"}

# Transitional: library modules that still raise built-in ValueError / OSError for user mistakes
# (instead of magtok.errors types) keep their one-line message when the error was raised by magtok's
# own code. Errors raised inside a dependency (torch, numpy, ...) and every RuntimeError / MemoryError
# are bugs and show their traceback. Remove once every module raises magtok.errors types.
_LEGACY_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                       NotADirectoryError)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _new_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="magtok", description="MagViT2-style video tokenizer: train, "
                                     "tokenize, detokenize and evaluate.")
    parser.add_argument("--version", action="version", version=f"magtok {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


def _version() -> str:
    from magtok import __version__

    return __version__


def _register(sub, module_name: str) -> None:
    try:
        module = importlib.import_module(f"magtok.cli.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"magtok.cli.{module_name}":
            raise
        return
    module.register(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser. With ``command`` known, only its module is imported and registered (the others
    get a placeholder entry for the help text); otherwise every module is registered."""
    parser, sub = _new_parser()
    if command in COMMANDS:
        module_name = COMMANDS[command][0]
        _register(sub, module_name)
        for name, (mod, help_) in COMMANDS.items():
            if mod != module_name:
                sub.add_parser(name, help=help_)
    else:
        for module_name in subcommand_modules():
            _register(sub, module_name)
    return parser


def _help_only_parser() -> argparse.ArgumentParser:
    parser, sub = _new_parser()
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_)
    return parser


def _first_positional(argv: list[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def _raised_by_magtok(e: BaseException) -> bool:
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    filename = os.path.abspath(last.tb_frame.f_code.co_filename)
    return filename.startswith(_PACKAGE_DIR + os.sep)


def is_user_error(e: BaseException) -> bool:
    """magtok's own user-error type; or (transitional) a built-in ValueError / OSError raised by magtok's
    own code. Never a RuntimeError, MemoryError or an error raised inside a dependency."""
    if isinstance(e, UserError):
        return True
    return isinstance(e, _LEGACY_USER_ERRORS) and not isinstance(e, (RuntimeError, MemoryError)) \
        and _raised_by_magtok(e)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _first_positional(argv)
    if command is None:  # `magtok`, `magtok --help`: no subcommand module is imported
        parser = _help_only_parser()
        parser.parse_args(argv)
        parser.print_help()
        return 2
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import torch

    # subnormal floats make CPU convolutions up to ~50x slower and never matter for tokens
    torch.set_flush_denormal(True)
    if args.command in STREAMING_COMMANDS:
        limit_heap_fragmentation()
    from magtok.cli.runtime import setup_logging

    setup_logging()
    try:
        result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", 2)  # TrainingInterrupted says which signal and where it saved
        print(f"magtok {args.command}: interrupted" + (f" ({e})" if str(e) else ""), file=sys.stderr)
        return 128 + signum
    except Exception as e:
        if not is_user_error(e) or os.environ.get("MAGTOK_DEBUG"):
            raise
        kind = "" if isinstance(e, (UserError, ValueError)) else f"{type(e).__name__}: "
        print(f"magtok {args.command}: error: {kind}{e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
