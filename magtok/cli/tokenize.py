"""``magtok tokenize``, ``detokenize`` and ``reconstruct``: thin wrappers of ``magtok.pipeline``.

    magtok tokenize VIDEO... --model M -o OUT [--size H W | --short-side N] [--fps F] [--start N]
                    [--max-frames N] [--chunk-latents N] [--tile PX --tile-overlap PX]
                    [--frames-policy pad|drop] [--overwrite]
    magtok detokenize TOKENS -o out.mp4 [--model M] [--chunk-latents N] [--tile PX] [--overwrite]
    magtok reconstruct VIDEO --model M -o out.mp4 [--side-by-side] [same reading options]

Streaming, sizes, frame counts, the token file header and how ``detokenize`` finds its model are
described in ``magtok.pipeline`` (api, reading, geometry, model).
"""

from __future__ import annotations

import os
from pathlib import Path

from magtok.cli.common import (MODEL_HELP, CommandError, add_compute, add_reading, compute_options, guarded, note,
                               progress_bar, read_options)
from magtok.pipeline.model import MODEL_PATH_ENV

__all__ = ["CommandError", "register"]

TOKEN_SUFFIX = ".tokens"


def _token_outputs(videos: list[str], out: str) -> list[Path]:
    out_p = Path(out)
    as_folder = len(videos) > 1 or out.endswith(("/", os.sep)) or out_p.is_dir()
    if not as_folder:
        return [out_p]
    if out_p.exists() and not out_p.is_dir():
        raise CommandError(f"-o {out}: several videos need an output folder, and {out} is a file")
    if not out_p.exists():
        if not out_p.parent.is_dir():
            raise CommandError(f"cannot create the output folder {out_p}: its parent {out_p.parent} does not exist")
        out_p.mkdir()
    paths = [out_p / (Path(v).stem + TOKEN_SUFFIX) for v in videos]
    seen: dict[Path, str] = {}
    for v, p in zip(videos, paths):
        if p in seen:
            raise CommandError(f"{seen[p]} and {v} would both be written to {p}; tokenize them separately")
        seen[p] = v
    return paths


def cmd_tokenize(args) -> int:
    from magtok.pipeline import encode_source, load_model, open_source
    from magtok.pipeline.reading import is_url, local_input
    from magtok.pipeline.writer import check_not_input, check_output
    read, compute = read_options(args), compute_options(args)
    model = load_model(args.model, compute.device)
    r_s = model.tok.space_compression
    outputs = _token_outputs(args.videos, args.output)
    for p in outputs:
        check_not_input(p, args.videos)                      # refused even with --overwrite
        check_output(p, args.overwrite)
    for v in args.videos:                                    # fail before any work
        if not is_url(v):
            open_source(v, r_s, read)
    compute.tiles(r_s)
    for video, out in zip(args.videos, outputs):
        with local_input(video) as local:
            src = open_source(local, r_s, read, name=str(video))
            for n in src.geometry.notes:
                note(f"{Path(video).name}: {n}")
            with progress_bar(src.frames, Path(video).name, args.quiet) as bar:
                result = encode_source(model, src, read, compute, bar.update)
        result.save(out, overwrite=args.overwrite)
        if not args.quiet:
            grid = "x".join(str(s) for s in result.codes.shape)
            print(f"{video} -> {out}  ({result.frames} frames {src.geometry.out[0]}x{src.geometry.out[1]}, "
                  f"codes {grid})")
    return 0


def cmd_detokenize(args) -> int:
    from magtok.pipeline import detokenize
    with progress_bar(None, Path(args.tokens).name, args.quiet) as bar:
        r = detokenize(args.tokens, args.output, args.model, compute_options(args), args.overwrite, bar.update)
    if not args.quiet:
        print(f"{args.tokens} -> {r.path}  ({r.frames} frame{'s' if r.frames != 1 else ''} {r.height}x{r.width}"
              + (f" at {r.fps:g} fps)" if r.path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp") else ")"))
    return 0


def cmd_reconstruct(args) -> int:
    from magtok.pipeline import reconstruct
    with progress_bar(None, Path(args.video).name, args.quiet) as bar:
        r = reconstruct(args.video, args.output, args.model, read_options(args), compute_options(args),
                        args.side_by_side, args.overwrite, bar.update)
    print(f"{args.video} -> {r.path}  ({r.frames} frames {r.height}x{r.width}"
          f"{', side by side' if args.side_by_side else ''})")
    line = f"PSNR {r.psnr:.2f} dB"
    line += f"  SSIM {r.ssim:.4f}" if r.ssim is not None else "  SSIM n/a (frames smaller than 11x11)"
    print(line)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenize", help="videos -> token files",
                              description="Encode videos (or images) into token files, streaming chunk by chunk.")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, webm, mkv, ...), images, or URLs")
    p.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="token file for one video; a folder for several (files <name>.tokens)")
    add_reading(p)
    add_compute(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing token files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_tokenize))

    p = subparsers.add_parser("detokenize", help="token file -> video",
                              description="Decode a token file into an H.264 video at the clip's frame rate, "
                                          "with as many frames as were tokenized.")
    p.add_argument("tokens", metavar="TOKENS")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .mp4/.mkv/.mov (.png for an image)")
    p.add_argument("--model", metavar="MODEL",
                   help=f"{MODEL_HELP}; default: the one recorded in the file, else a match in ${MODEL_PATH_ENV}")
    add_compute(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_detokenize))

    p = subparsers.add_parser("reconstruct", help="video -> tokens -> video, with PSNR / SSIM",
                              description="Tokenize and detokenize a video in memory (streaming), write the "
                                          "reconstruction and print PSNR and SSIM against the resized input.")
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .mp4/.mkv/.mov")
    p.add_argument("--side-by-side", action="store_true", help="write input | reconstruction")
    add_reading(p)
    add_compute(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_reconstruct))
