"""Run a tokenizer over a folder of videos and measure how well it reconstructs them.

    from magtok.evaluation import evaluate, write_report
    result = evaluate("runs/demo", "videos/", frames=17, size=128)
    write_report(result, "eval/")

Clip selection (deterministic: the same folder and settings give the same clips on every machine)
    * Files: every video (.mp4 .webm .mkv .avi .mov .gif) under the folder, recursively, in sorted
      path order, hidden names ignored (:func:`magtok.data.scan_media`). Photos (.png .jpg .jpeg
      .webp) are one-frame clips when ``frames == 1`` and are skipped with a note otherwise.
    * Windows: a video of ``n`` frames is cut into ``c = min(clips_per_video, n // frames)`` equal
      segments and one window of ``frames`` consecutive frames is centred in each segment:
      ``start_i = floor(i * n / c + (n / c - frames) / 2)`` (:func:`clip_starts`). The windows never
      overlap; with ``c == 1`` this is the centred window of ``VideoFolderDataset(train=False)``. A
      video shorter than ``clips_per_video * frames`` gives fewer clips (noted); one shorter than
      ``frames`` is skipped.
    * Space: each frame is resized (bilinear, antialiased) so that it covers ``size`` keeping its
      aspect ratio (int: the short side becomes ``size``), then centre-cropped to ``size``.
    * ``max_clips``: stop after the first ``max_clips`` clips that could be read, in the order above.
    * Length: a video's ``n`` is the number of frames that decode (:func:`magtok.data.probe_video`).
      A file whose container promises more (cut short, or a header that overcounts) is evaluated on
      the frames that decode, with one warning and a note giving both counts.
    * Unreadable or corrupt files, and videos with fewer decodable frames than one window, are
      skipped and listed with the reason.

Metrics
    Reconstruction is ``decode(encode(clip))`` (or ``decode_chunked(encode_chunked(...))`` with
    ``chunk_latents``, equal up to float noise), clamped to [-1, 1] (what a saved video shows).
    Per clip, the mean over its frames of PSNR (dB, capped at 100 dB so that means stay finite;
    always computed, it ranks the clips for the plots), SSIM and LPIPS (AlexNet). Aggregates are
    the mean, std (ddof=1; 0 for one clip), min and max over clips: every clip counts once.
    Over the data set: rFVD (I3D on the first 16 frames of each clip; needs ``frames >= 16`` and
    two clips; strongly biased below 800 clips), codebook utilisation / perplexity of all codes
    (pooled over codebooks when there are several), bits per token, compression ratio, and
    tokenizer throughput (encode + decode only: no reading, resizing or metrics; the first batch
    is left out when there are several, as it includes one-off kernel warm-up).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
import torch

import magtok
from magtok.data import VideoFolderDataset, VideoReadError, read_image, read_video, resize_and_crop, scan_media
from magtok.data.video import to_tensor
from magtok.metrics import CodebookUsage, FVDAccumulator, SmallSampleWarning, lpips, psnr, ssim
from magtok.metrics.fvd import FVD_NUM_FRAMES
from magtok.models import VideoTokenizer

__all__ = ["evaluate", "EvalResult", "ClipRecord", "KNOWN_METRICS", "parse_metrics", "clip_starts",
           "CLIP_SELECTION_RULE", "PSNR_CAP_DB", "FVD_RELIABLE_CLIPS"]

KNOWN_METRICS = ("psnr", "ssim", "lpips", "fvd")
PSNR_CAP_DB = 100.0
FVD_RELIABLE_CLIPS = 800  # 2 x the 400 I3D features: below this frechet_distance warns
CLIP_SELECTION_RULE = (
    "files: videos under the data folder, recursively, sorted by path (photos only when frames == 1); "
    "per video of n frames: c = min(clips_per_video, n // frames) equal segments, one window of "
    "`frames` consecutive frames centred in each (start_i = floor(i*n/c + (n/c - frames)/2)); "
    "frames resized to cover `size` (aspect kept, bilinear antialias), then centre-cropped; "
    "max_clips keeps the first clips in this order")

@dataclass(frozen=True)
class ClipRecord:
    """Scores of one clip: ``file`` relative to the data folder, ``start`` its first source frame."""

    file: str
    start: int
    psnr: float
    ssim: float | None = None
    lpips: float | None = None
    # baseline name -> {"psnr", "ssim", "lpips", and for h264 "crf", "bits", "budget_bits", "fits"}
    baselines: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    """Everything :func:`evaluate` measured, and how.

    records: one :class:`ClipRecord` per clip, in clip order.
    aggregates: per-clip metric -> {"mean", "std", "min", "max", "clips"} over clips.
    dataset: set-level numbers: "fvd" (None when skipped), "fvd_clips", "fvd_caveat" (None or a
        sentence), "codebook" ({codebook_size, tokens, used, utilization, perplexity, entropy_bits}),
        "bits_per_token", "tokens_per_clip", "latent_shape", "compression_ratio", "throughput"
        ({clips_per_s, frames_per_s, timed_clips, tokenizer_seconds, total_seconds}; the rates leave out
        the first batch when there are several: it includes one-off warm-up).
    skipped: file (relative to the data folder) -> reason, for every file that gave no clip.
    notes: other things the reader should know (fewer clips than asked, FVD skipped, ...).
    settings: the exact settings (model path and fingerprint, data folder, frames, size, metrics,
        clip selection rule, versions, date).
    best_clip / worst_clip: (original, reconstruction) (3, T, H, W) CPU tensors in [-1, 1] of the
        clips with the highest / lowest PSNR, for frame strips; not part of :meth:`to_dict`.
    """

    records: list[ClipRecord]
    aggregates: dict[str, dict[str, float]]
    dataset: dict
    skipped: dict[str, str]
    notes: list[str]
    settings: dict
    best_index: int = 0
    worst_index: int = 0
    best_clip: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    worst_clip: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def best(self) -> ClipRecord:
        return self.records[self.best_index]

    @property
    def worst(self) -> ClipRecord:
        return self.records[self.worst_index]

    def to_dict(self) -> dict:
        """Plain JSON-ready data (non-finite floats become None)."""
        out = {
            "settings": self.settings,
            "aggregates": self.aggregates,
            "dataset": self.dataset,
            "best_clip": asdict(self.best),
            "worst_clip": asdict(self.worst),
            "clips": [asdict(r) for r in self.records],
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped.items()],
            "notes": list(self.notes),
        }
        return _finite(out)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------ argument checks
def parse_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """``"psnr,ssim"`` or ``("psnr", "ssim")`` -> a tuple in canonical order; unknown names are errors."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    if not names:
        raise ValueError(f"no metrics given; known metrics: {', '.join(KNOWN_METRICS)}")
    unknown = sorted({n for n in names if n not in KNOWN_METRICS})
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(repr(u) for u in unknown)}; known metrics: "
                         f"{', '.join(KNOWN_METRICS)}")
    return tuple(m for m in KNOWN_METRICS if m in names)


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace("x", ",").split(",")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"size {size!r} is not an int or HxW (e.g. 128 or 128x224)") from None
        size = vals[0] if len(vals) == 1 else tuple(vals)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if not isinstance(size, (tuple, list)) or len(size) != 2 or \
            not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
        raise ValueError(f"size must be an int or (H, W); got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive; got {h}x{w}")
    return h, w


def clip_starts(num_frames: int, frames: int, clips_per_video: int = 1) -> list[int]:
    """Start frames of the evaluation windows of a video (see the module docstring).

    ``c = min(clips_per_video, num_frames // frames)`` windows, one centred in each of ``c`` equal
    segments of the video: non-overlapping, deterministic, and the centred window when ``c == 1``.
    Empty when the video is shorter than ``frames``.
    """
    n, f = int(num_frames), int(frames)
    c = min(int(clips_per_video), n // f) if f > 0 else 0
    if c < 1:
        return []
    return [int(math.floor(i * n / c + (n / c - f) / 2 + 1e-9)) for i in range(c)]


# ---------------------------------------------------------------------------------------- run
def _rel(path: str, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "clips": int(len(a))}


def _load_model(model) -> tuple[VideoTokenizer, str | None]:
    if isinstance(model, VideoTokenizer):
        return model, None
    if isinstance(model, (str, os.PathLike)):
        from magtok.models.pretrained import list_pretrained, resolve_pretrained

        d = Path(model)
        if not d.exists() and str(model) in list_pretrained():       # a bundled name, e.g. "magtok-small"
            d = resolve_pretrained(str(model))
            return VideoTokenizer.from_pretrained(d), str(model)
        if not d.exists():
            raise FileNotFoundError(f"model folder {d} does not exist (it should hold config.json and "
                                    "model.safetensors, written by `magtok train` or save_pretrained)")
        if not d.is_dir():
            raise NotADirectoryError(f"model path {d} is not a folder (a magtok model is a folder with "
                                     "config.json and model.safetensors)")
        return VideoTokenizer.from_pretrained(d), str(d.resolve())
    raise ValueError(f"model must be a VideoTokenizer or the path of a saved one; got {type(model).__name__}")


def _plan(root: Path, frames: int, size: tuple[int, int], clips_per_video: int,
          skipped: dict[str, str], notes: list[str]) -> list[tuple[str, str, list[int]]]:
    """[(path, kind, starts)] for every usable file, in sorted order; fills ``skipped`` and ``notes``."""
    found = scan_media(root)  # FileNotFoundError / NotADirectoryError / ValueError (empty), clear
    photos = [p for p, k in found if k == "image"]
    if frames > 1 and photos:
        for p in photos:
            skipped[_rel(p, root)] = (f"a photo: photos are evaluated as one-frame clips only with "
                                      f"frames=1 (this evaluation uses {frames}-frame clips)")
        if len(photos) == len(found):
            raise ValueError(f"no videos under {root}: it holds only {len(photos)} photo(s), which are "
                             f"evaluated only with frames=1 (--frames 1)")
    with warnings.catch_warnings():  # the dataset warns once per skipped file; we report them instead
        warnings.simplefilter("ignore")
        ds = VideoFolderDataset(root, frames=frames, size=size, train=False, images=frames == 1,
                                validate="packets")
    for p, reason in ds.skipped.items():
        skipped[_rel(p, root)] = reason
    for p, (declared, decodable) in ds.shortened.items():   # use the frames that decode; say so once
        msg = (f"{_rel(p, root)}: the container declares {declared} frames but only {decodable} decode "
               f"(cut short or a wrong header); its clips come from the {decodable} that decode")
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)
    plan, fewer = [], 0
    for item in ds.items:
        if item.kind == "image":
            plan.append((item.path, "image", [0]))
            continue
        starts = clip_starts(item.num_frames, frames, clips_per_video)
        if not starts:
            skipped[_rel(item.path, root)] = f"too short: {item.num_frames} frames, a clip needs {frames}"
            continue
        fewer += len(starts) < clips_per_video
        plan.append((item.path, "video", starts))
    if fewer:
        notes.append(f"{fewer} video(s) are shorter than clips_per_video x frames = "
                     f"{clips_per_video} x {frames} and gave fewer clips (windows never overlap)")
    return plan


def _read_clips(path: str, kind: str, starts: list[int], frames: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """All windows of one file as (3, T, H, W) float32 in [-1, 1]; raises VideoReadError."""
    out = []
    try:
        for s in starts:
            u8 = read_image(path)[None] if kind == "image" else read_video(path, s, frames)[0]
            clip, _ = resize_and_crop(to_tensor(u8), size)
            out.append(clip.clamp(-1, 1).contiguous())
    except VideoReadError as e:
        raise VideoReadError(path, e.reason) from None
    except (OSError, av.error.FFmpegError) as e:
        raise VideoReadError(path, f"{type(e).__name__}: {e}") from None
    return out


def _clips(plan, frames, size, root, skipped, max_clips, bar) -> Iterator[tuple[str, int, torch.Tensor]]:
    given = 0
    for path, kind, starts in plan:
        if max_clips is not None and given >= max_clips:
            return
        try:
            clips = _read_clips(path, kind, starts, frames, size)
        except VideoReadError as e:
            skipped[_rel(path, root)] = e.reason
            if bar is not None and max_clips is None:
                bar.total -= len(starts)
                bar.refresh()
            continue
        for s, clip in zip(starts, clips):
            if max_clips is not None and given >= max_clips:
                return
            given += 1
            yield _rel(path, root), s, clip


def _batches(it, batch_size):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == batch_size:
            yield buf
            buf = []
    if buf:
        yield buf


@torch.no_grad()
def evaluate(model: VideoTokenizer | str | os.PathLike, data_dir, frames: int = 17, size=128,
             metrics: str | Sequence[str] = KNOWN_METRICS, clips_per_video: int = 1,
             max_clips: int | None = None, batch_size: int = 1, chunk_latents: int | None = None,
             device: str | torch.device = "cpu", progress: bool = True,
             baselines: str | Sequence[str] = ()) -> EvalResult:
    """Reconstruct every clip of ``data_dir`` with ``model`` and score it (see the module docstring).

    Args:
        model: a :class:`VideoTokenizer`, or the folder of one saved with ``save_pretrained``.
        data_dir: folder of videos (and photos, used only when ``frames == 1``), scanned recursively.
        frames: frames per clip, ``1 + k * r_t`` for the tokenizer's temporal compression r_t.
        size: int (short side, square crop) or (H, W); divisible by the spatial compression.
        metrics: any of "psnr", "ssim", "lpips", "fvd" (names or a comma-separated string). PSNR is
            computed in any case (it ranks the clips); codebook usage, bits per token, compression
            ratio and throughput always.
        clips_per_video: non-overlapping windows per video (fewer when the video is too short).
        max_clips: evaluate at most this many clips (the first ones in clip order).
        batch_size: clips per tokenizer call (a memory knob; results equal up to float noise).
        chunk_latents: encode and decode with streaming, this many latent frames per chunk
            (:meth:`VideoTokenizer.encode_chunked` / ``decode_chunked``); None: whole clips.
        device: where the tokenizer and the metric networks run. The model is put back on its
            device and in its train/eval mode afterwards.
        progress: show a tqdm progress bar (stderr).
        baselines: any of "temporal_mean" (each frame replaced by the window's mean frame) and "h264"
            (libx264 at the smallest CRF whose bitstream fits the tokens' bits for the same window);
            each is scored with the same metrics per clip (:mod:`magtok.evaluation.baselines`).

    Raises:
        FileNotFoundError / NotADirectoryError: missing model or data folder.
        ValueError: bad settings, an empty folder, or a folder in which no file could be read.
    """
    t_start = time.perf_counter()
    metrics = parse_metrics(metrics)
    h, w = _parse_size(size)
    for name, v, lo in (("frames", frames, 1), ("clips_per_video", clips_per_video, 1), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or int(v) != v or v < lo:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    frames, clips_per_video, batch_size = int(frames), int(clips_per_video), int(batch_size)
    if max_clips is not None and (isinstance(max_clips, bool) or int(max_clips) != max_clips or max_clips < 1):
        raise ValueError(f"max_clips must be a positive integer or None; got {max_clips!r}")
    if chunk_latents is not None and (isinstance(chunk_latents, bool) or int(chunk_latents) != chunk_latents
                                      or chunk_latents < 1):
        raise ValueError(f"chunk_latents must be a positive integer or None; got {chunk_latents!r}")

    from magtok.evaluation.baselines import BASELINES, run_baseline

    if isinstance(baselines, str):
        baselines = [b.strip() for b in baselines.split(",") if b.strip()]
    baselines = tuple(baselines)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {', '.join(BASELINES)}")
    tok, model_path = _load_model(model)
    r_t, r_s = tok.time_compression, tok.space_compression
    if (frames - 1) % r_t:
        k = (frames - 1) // r_t
        raise ValueError(f"frames={frames}: this tokenizer needs 1 + {r_t}k frames per clip "
                         f"(e.g. {1 + k * r_t} or {1 + (k + 1) * r_t})")
    if h % r_s or w % r_s:
        raise ValueError(f"size {h}x{w} is not divisible by {r_s} (the tokenizer's spatial compression); "
                         f"use e.g. {max(1, h // r_s) * r_s}x{max(1, w // r_s) * r_s}")
    if "ssim" in metrics and min(h, w) < 11:
        raise ValueError(f"SSIM needs frames of at least 11x11 (its Gaussian window); size is {h}x{w}")
    if tok.needs_cond:
        raise ValueError("this tokenizer has conditioned layers; evaluation without a condition is not supported")

    root = Path(data_dir)
    skipped: dict[str, str] = {}
    notes: list[str] = []
    plan = _plan(root, frames, (h, w), clips_per_video, skipped, notes)
    planned = sum(len(s) for _, _, s in plan)

    use_fvd = "fvd" in metrics
    if use_fvd and frames < FVD_NUM_FRAMES:
        use_fvd = False
        notes.append(f"FVD skipped: it needs {FVD_NUM_FRAMES}-frame clips and these have {frames} frames")

    device = torch.device(device)
    was_training, old_device = tok.training, tok.device
    tok.eval().to(device)
    usage = CodebookUsage(tok.codebook_size)
    fvd_acc = FVDAccumulator() if use_fvd else None
    records: list[ClipRecord] = []
    best = worst = None  # (psnr, index, original, recon)
    timings: list[tuple[int, float]] = []  # (clips, seconds of encode + decode) per batch
    latent_shape = list(tok.latent_shape(frames, h, w))

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=planned if max_clips is None else min(planned, int(max_clips)), desc="eval",
                   unit="clip", dynamic_ncols=True, file=sys.stderr)
    try:
        for batch in _batches(_clips(plan, frames, (h, w), root, skipped, max_clips, bar), batch_size):
            x = torch.stack([c for _, _, c in batch]).to(device)  # (B, 3, T, H, W) in [-1, 1]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            if chunk_latents is None:
                codes = tok.encode(x)
                recon = tok.decode(codes)
            else:
                codes = tok.encode_chunked(x, int(chunk_latents))
                recon = tok.decode_chunked(codes, int(chunk_latents))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings.append((x.shape[0], time.perf_counter() - t0))
            recon = recon.float().clamp(-1, 1)  # (B, 3, T, H, W), as a saved video would show it

            p = psnr(x, recon, max_db=PSNR_CAP_DB).mean(dim=1)
            s = ssim(x, recon).double().mean(dim=1) if "ssim" in metrics else None
            lp = lpips(x, recon).double().mean(dim=1) if "lpips" in metrics else None
            usage.update(codes.cpu())
            if fvd_acc is not None:
                fvd_acc.update(real=x[:, :, :FVD_NUM_FRAMES], fake=recon[:, :, :FVD_NUM_FRAMES])
            budget = float(math.prod(latent_shape)) * float(tok.bits_per_token)
            for i, (file, start, _) in enumerate(batch):
                base_scores = {}
                for name in baselines:
                    b_recon, info = run_baseline(name, x[i].cpu(), budget)
                    b = b_recon[None].to(device).clamp(-1, 1)
                    base_scores[name] = {"psnr": float(psnr(x[i:i + 1], b, max_db=PSNR_CAP_DB).mean()), **info}
                    if "ssim" in metrics:
                        base_scores[name]["ssim"] = float(ssim(x[i:i + 1], b).double().mean())
                    if "lpips" in metrics:
                        base_scores[name]["lpips"] = float(lpips(x[i:i + 1], b).double().mean())
                rec = ClipRecord(file=file, start=int(start), psnr=float(p[i]),
                                 ssim=None if s is None else float(s[i]),
                                 lpips=None if lp is None else float(lp[i]), baselines=base_scores)
                idx = len(records)
                records.append(rec)
                if best is None or rec.psnr > best[0]:
                    best = (rec.psnr, idx, x[i].cpu(), recon[i].cpu())
                if worst is None or rec.psnr < worst[0]:
                    worst = (rec.psnr, idx, x[i].cpu(), recon[i].cpu())
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(psnr=f"{np.mean([r.psnr for r in records]):.2f}")
    finally:
        if bar is not None:
            bar.close()
        tok.to(old_device).train(was_training)

    if not records:
        raise ValueError(f"no clip of {root} could be evaluated; skipped files: "
                         + "; ".join(f"{f}: {r}" for f, r in skipped.items()))

    aggregates = {"psnr": _stats([r.psnr for r in records])}
    if "ssim" in metrics:
        aggregates["ssim"] = _stats([r.ssim for r in records])
    if "lpips" in metrics:
        aggregates["lpips"] = _stats([r.lpips for r in records])

    for name in baselines:
        for m in ("psnr", "ssim", "lpips"):
            if m == "psnr" or m in metrics:
                aggregates[f"{name}/{m}"] = _stats([r.baselines[name][m] for r in records])
    if "temporal_mean" in baselines:
        per_file: dict[str, list[tuple[float, float]]] = {}
        for r in records:
            per_file.setdefault(r.file, []).append((r.psnr, r.baselines["temporal_mean"]["psnr"]))
        behind = [f for f, v in per_file.items() if np.mean([a for a, _ in v]) <= np.mean([b for _, b in v])]
        if behind:
            notes.append(f"PSNR not above the temporal-mean baseline on: {', '.join(behind)}")

    fvd_value, fvd_caveat = None, None
    if fvd_acc is not None:
        if len(records) < 2:
            notes.append("FVD skipped: it needs at least 2 clips")
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fvd_value = fvd_acc.compute()
            for wrn in caught:
                if issubclass(wrn.category, SmallSampleWarning):
                    fvd_caveat = (f"rFVD from {len(records)} clips is strongly biased (its covariances need "
                                  f"at least {FVD_RELIABLE_CLIPS} clips, 2 x the 400 I3D features; published "
                                  f"numbers use 2048 or more): compare it only with rFVDs computed on the "
                                  f"same number of clips")
                else:
                    notes.append(f"FVD: {wrn.message}")

    n = len(records)
    cb = usage.compute()
    timed = timings[1:] if len(timings) > 1 else timings  # the first batch warms up kernels: not timed
    timed_clips, timed_seconds = sum(c for c, _ in timed), sum(t for _, t in timed)
    dataset = {
        "clips": n,
        "files": len({r.file for r in records}),
        "fvd": fvd_value,
        "fvd_clips": n if fvd_value is not None else 0,
        "fvd_caveat": fvd_caveat,
        "codebook": asdict(cb),
        "bits_per_token": float(tok.bits_per_token),
        "bits_per_pixel": float(math.prod(latent_shape)) * float(tok.bits_per_token) / (frames * h * w),
        "latent_shape": latent_shape,
        "tokens_per_clip": int(math.prod(latent_shape)),
        "compression_ratio": float(tok.compression_ratio_for(frames, h, w)),
        "throughput": {
            "clips_per_s": timed_clips / timed_seconds if timed_seconds > 0 else None,
            "frames_per_s": timed_clips * frames / timed_seconds if timed_seconds > 0 else None,
            "timed_clips": timed_clips,
            "tokenizer_seconds": sum(t for _, t in timings),
            "total_seconds": time.perf_counter() - t_start,
        },
    }
    if max_clips is not None and planned > n:
        notes.append(f"max_clips={max_clips}: evaluated the first {n} of {planned} clips")

    settings = {
        "model": model_path,
        "fingerprint": tok.fingerprint(),
        "model_config": {"time_compression": r_t, "space_compression": r_s,
                         "codebook_size": tok.codebook_size,
                         "quantizer": tok.config.quantizer.kind},
        "data": str(root.resolve()),
        "frames": frames,
        "size": [h, w],
        "metrics": list(metrics),
        "baselines": list(baselines),
        "lpips_net": "alexnet" if "lpips" in metrics else None,
        "psnr_cap_db": PSNR_CAP_DB,
        "clips_per_video": clips_per_video,
        "max_clips": None if max_clips is None else int(max_clips),
        "batch_size": batch_size,
        "chunk_latents": None if chunk_latents is None else int(chunk_latents),
        "device": str(device),
        "clip_selection": CLIP_SELECTION_RULE,
        "versions": {"magtok": magtok.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return EvalResult(records=records, aggregates=aggregates, dataset=dataset, skipped=skipped, notes=notes,
                      settings=settings, best_index=best[1], worst_index=worst[1],
                      best_clip=(best[2], best[3]), worst_clip=(worst[2], worst[3]))
