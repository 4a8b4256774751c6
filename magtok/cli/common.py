"""What the pipeline subcommands share: option groups, argparse -> pipeline options, error handling."""

from __future__ import annotations

import contextlib
import re
import sys
import warnings

from magtok.cli.errors import UserError

MODEL_HELP = "model folder (config.json + model.safetensors) or a bundled model name"


class CommandError(UserError, ValueError):
    """A message for the user (printed without a traceback, exit code 2). Also a ValueError, like the
    library's own input errors, so that callers can catch either."""


# Library messages name parameters (``size=(33, 40)``, ``overwrite=True``); the command line names
# its flags instead. Only the parameters that are also flags of the pipeline commands are translated.
_FLAG_PARAMS = ("short_side", "fps", "start", "max_frames", "frames_policy", "chunk_latents", "tile_overlap",
                "tile", "device", "engine", "shard_id", "num_shards", "window_frames", "limit", "batch_size",
                "decode_workers", "rows_per_part", "workers", "model", "ray_address", "ray_cpus", "ray_actors")
_FLAG_RE = re.compile(r"(?<![\w.-])(" + "|".join(_FLAG_PARAMS) + r")=")
_SIZE_RE = re.compile(r"(?<![\w.-])size=\(([^,()]+), ([^()]+)\)")
_SWITCH_RE = re.compile(r"(?<![\w.-])(overwrite|retry_failed)=True\b")


def flag_names(msg: str) -> str:
    """A library message with parameter names turned into the command line's flags:
    ``size=(33, 40)`` -> ``--size 33 40``, ``short_side=8`` -> ``--short-side 8``,
    ``overwrite=True`` -> ``--overwrite``."""
    msg = _SIZE_RE.sub(r"--size \1 \2", msg)
    msg = _SWITCH_RE.sub(lambda m: "--" + m.group(1).replace("_", "-"), msg)
    return _FLAG_RE.sub(lambda m: "--" + m.group(1).replace("_", "-") + " ", msg)


def _use_flag_names(e: BaseException) -> None:
    """Rewrite a one-argument ValueError / OSError message in place (type and traceback kept)."""
    if isinstance(e, (ValueError, OSError)) and len(e.args) == 1 and isinstance(e.args[0], str):
        e.args = (flag_names(e.args[0]),)


@contextlib.contextmanager
def shortened_video_notes():
    """Print each ``ShortenedVideoWarning`` (a container that promises more frames than decode) and
    ``SkippedModelWarning`` (a broken folder on $MAGTOK_MODEL_PATH, passed over) once, as one
    ``magtok: warning:`` line; other warnings are shown as usual."""
    from magtok.pipeline.model import SkippedModelWarning
    from magtok.pipeline.reading import ShortenedVideoWarning
    ours = (ShortenedVideoWarning, SkippedModelWarning)
    seen: set[str] = set()
    with warnings.catch_warnings():
        for category in ours:
            warnings.simplefilter("always", category)
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, ours):
                return show(message, category, filename, lineno, file, line)
            text = str(message)
            if text not in seen:
                seen.add(text)
                print(f"magtok: warning: {text}", file=sys.stderr)

        warnings.showwarning = showwarning
        yield


def guarded(fn):
    """Turn OS and FFmpeg errors about the user's files into one-line messages (exit code 2), name
    command-line flags in the library's messages, and print shortened-video warnings once.

    Other exceptions are bugs and keep their traceback."""
    def run(args):
        try:
            with shortened_video_notes():
                return fn(args)
        except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
            _use_flag_names(e)
            raise
        except OSError as e:  # ENOSPC, EROFS, EIO ...
            raise CommandError(f"{type(e).__name__}: {flag_names(str(e))}") from None
        except ValueError as e:
            _use_flag_names(e)
            raise
        except Exception as e:
            import av
            if isinstance(e, av.error.FFmpegError):   # encoding / muxing errors of the output video
                raise CommandError(f"FFmpeg: {e}") from None
            if isinstance(e, ImportError) and "pip install" in str(e):   # an optional dependency
                raise CommandError(flag_names(str(e))) from None
            raise
    run.__name__ = fn.__name__
    return run


def note(msg: str) -> None:
    print(f"magtok: note: {flag_names(msg)}", file=sys.stderr)


def progress_bar(total, desc, quiet, position=None, unit="frame"):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, dynamic_ncols=True, leave=position is None,
                position=position, file=sys.stderr)


def add_reading(p, frames_policy: bool = True) -> None:
    g = p.add_argument_group("reading")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                      help="resize to cover H x W (aspect kept), then centre crop")
    size.add_argument("--short-side", type=int, metavar="N", help="resize so that the shorter side is N")
    g.add_argument("--fps", type=float, help="resample to this frame rate (nearest frame)")
    g.add_argument("--start", type=int, default=0, metavar="N", help="first source frame (default 0)")
    g.add_argument("--max-frames", type=int, metavar="N", help="read at most N frames")
    if frames_policy:
        g.add_argument("--frames-policy", choices=("pad", "drop"), default="pad",
                       help="frame counts not of the form 1 + k*r_t: 'pad' repeats the last frame (default; "
                            "detokenize trims it again), 'drop' drops the last frames")


def add_compute(p) -> None:
    g = p.add_argument_group("compute")
    g.add_argument("--chunk-latents", type=int, default=4, metavar="N",
                   help="latent frames per streaming chunk (memory knob, same result; default 4)")
    g.add_argument("--tile", type=int, metavar="PX", help="spatial tiles of PX pixels (memory knob, approximate)")
    g.add_argument("--tile-overlap", type=int, metavar="PX", help="tile overlap in pixels (default min(32, tile/4))")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--winograd", action="store_true",
                   help="float32 CPU: Winograd F(4x4,3x3) for the 3x3x3 convolutions, ~1.5x faster on large "
                        "models; rounding differs slightly (README 'Inference speed'); built with g++ on first use")


def read_options(args):
    from magtok.pipeline import ReadOptions
    return ReadOptions(size=tuple(args.size) if args.size else None, short_side=args.short_side, fps=args.fps,
                       start=args.start, max_frames=args.max_frames,
                       frames_policy=getattr(args, "frames_policy", "pad"))


def compute_options(args):
    from magtok.pipeline import ComputeOptions
    return ComputeOptions(chunk_latents=args.chunk_latents, tile=args.tile, tile_overlap=args.tile_overlap,
                          device=args.device, winograd=args.winograd)
