"""``magtok eval``: reconstruction metrics of a trained tokenizer on a folder of videos.

    magtok eval --model runs/demo --data videos/ [--frames 17 --size 128 --metrics psnr,ssim,lpips,fvd
                --clips-per-video 1 --max-clips N --batch-size 1 --chunk-latents N --device auto
                --out eval/ --overwrite]

Writes eval/results.json, eval/summary.md, eval/psnr_per_clip.png, eval/best_clip.png and
eval/worst_clip.png (see :mod:`magtok.evaluation`) and prints the summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from magtok.evaluation import (KNOWN_METRICS, check_out_dir, evaluate, parse_metrics, summary_table,
                               write_report)
from magtok.evaluation.report import baseline_table, dataset_table


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="measure reconstruction quality of a tokenizer on a folder of videos",
        description="Reconstruct every clip of a folder with a trained tokenizer and report PSNR, SSIM, "
                    "LPIPS, rFVD, codebook usage, compression and throughput. Clips: videos in sorted "
                    "order, --clips-per-video non-overlapping windows centred in equal segments of each "
                    "video, resized on the short side and centre-cropped to --size.")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="tokenizer folder (config.json + model.safetensors) or a bundled name such as magtok-small")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of videos (scanned recursively)")
    p.add_argument("--frames", type=_positive_int, default=17, help="frames per clip, 1 + k*r_t (default 17)")
    p.add_argument("--size", default="128", help="short side (square crop) or HxW, e.g. 128 or 128x224 (default 128)")
    p.add_argument("--metrics", default=",".join(KNOWN_METRICS),
                   help=f"comma-separated subset of {','.join(KNOWN_METRICS)} (default all); PSNR, codebook "
                        f"usage, compression and throughput are always reported")
    p.add_argument("--clips-per-video", type=_positive_int, default=1, metavar="N",
                   help="non-overlapping clips per video (default 1)")
    p.add_argument("--max-clips", type=_positive_int, default=None, metavar="N", help="evaluate at most N clips (the first ones)")
    p.add_argument("--batch-size", type=_positive_int, default=1, metavar="N", help="clips per tokenizer call (default 1)")
    p.add_argument("--chunk-latents", type=_positive_int, default=None, metavar="N",
                   help="encode/decode with streaming, N latent frames per chunk (saves memory on long clips)")
    p.add_argument("--baselines", default="", metavar="NAMES",
                   help="score references on the same clips: temporal_mean (each frame = the window's mean "
                        "frame), h264 (libx264 at the smallest CRF that fits the same bits), comma-separated")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--out", default="eval", metavar="DIR", help="report folder (default eval/)")
    p.add_argument("--overwrite", action="store_true", help="replace the report files in an existing --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    metrics = parse_metrics(args.metrics)          # unknown names fail before anything is loaded
    from magtok.errors import MissingError
    from magtok.models.pretrained import list_pretrained, resolve_pretrained

    try:
        model_dir = resolve_pretrained(args.model)   # a folder or a bundled name such as magtok-small
    except FileNotFoundError as e:
        raise MissingError(str(e)) from None
    data_dir = Path(args.data)
    if not data_dir.exists():
        raise MissingError(f"data folder {data_dir} does not exist")
    check_out_dir(args.out, args.overwrite)        # before a long evaluation, not after
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = args.model if args.model in list_pretrained() else model_dir   # a bundled name is reported as such
    result = evaluate(model, data_dir, frames=args.frames, size=args.size, metrics=metrics,
                      clips_per_video=args.clips_per_video, max_clips=args.max_clips, batch_size=args.batch_size,
                      chunk_latents=args.chunk_latents, device=device, progress=not args.no_progress,
                      baselines=args.baselines)
    paths = write_report(result, args.out, overwrite=args.overwrite)
    print(summary_table(result))
    print()
    print(dataset_table(result))
    if result.settings.get("baselines"):
        print()
        print(baseline_table(result))
    if result.dataset.get("fvd_caveat"):
        print(f"\nFVD caveat: {result.dataset['fvd_caveat']}.")
    if result.skipped:
        print(f"\nskipped {len(result.skipped)} file(s):")
        for f, r in result.skipped.items():
            print(f"  {f}: {r}")
    for note in result.notes:
        print(f"note: {note}")
    out = Path(args.out)
    print(f"\nwrote {', '.join(p.name for p in paths.values())} to {out}/")
    return 0
