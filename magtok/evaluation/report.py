"""Write an :class:`~magtok.evaluation.runner.EvalResult` to a folder.

    eval/
      results.json        every number and the exact settings (strict JSON: no NaN)
      summary.md          Markdown tables of the aggregates and data-set metrics, settings, skipped files
      psnr_per_clip.png   per-clip PSNR, sorted, with the mean
      best_clip.png       frames of the clip with the highest PSNR: original (top) over reconstruction
      worst_clip.png      the same for the lowest PSNR

Every file is written to a temporary name in the folder and then renamed (``os.replace``), so a
crash never leaves a half-written report file. An existing non-empty folder is refused unless
``overwrite=True``; then the five report files are replaced and other files are left alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from magtok._io import atomic_write
from magtok.evaluation.runner import EvalResult

__all__ = ["write_report", "check_out_dir", "summary_markdown", "summary_table", "REPORT_FILES"]

REPORT_FILES = ("results.json", "summary.md", "psnr_per_clip.png", "best_clip.png", "worst_clip.png")

_ROWS = (("psnr", "PSNR (dB)", "higher"), ("ssim", "SSIM", "higher"), ("lpips", "LPIPS (AlexNet)", "lower"))
_MIN_STRIP_FRAME_HEIGHT = 96  # small clips are enlarged (nearest neighbour) in the frame strips


def check_out_dir(out_dir, overwrite: bool = False) -> Path:
    """Raise when ``out_dir`` cannot take a report: not a folder, or non-empty without ``overwrite``.

    Call it before a long evaluation so that the user learns about the conflict up front.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a folder; choose another --out")
    if out.is_dir() and not overwrite:
        names = sorted(p.name for p in out.iterdir())
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise FileExistsError(f"output folder {out} already exists and is not empty ({shown}); pass "
                                  f"--overwrite (overwrite=True) to replace the report, or choose another --out")
    return out


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    atomic_write(path, write)


# ------------------------------------------------------------------------------------- text
def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"
    return str(v)


def summary_table(result: EvalResult) -> str:
    """The Markdown table of per-clip metric aggregates (mean, std, min, max over clips)."""
    n = len(result.records)
    lines = [f"| metric (over {n} clip{'s' if n != 1 else ''}) | mean | std | min | max | better |",
             "|---|---:|---:|---:|---:|---|"]
    for prefix, who in [("", "")] + [(f"{b}/", f"{_BASELINE_LABELS.get(b, b)}: ")
                                       for b in result.settings.get("baselines") or ()]:
        for key, label, better in _ROWS:
            a = result.aggregates.get(prefix + key)
            if a is None:
                continue
            lines.append(f"| {who}{label} | {_fmt(a['mean'])} | {_fmt(a['std'])} | {_fmt(a['min'])} | "
                         f"{_fmt(a['max'])} | {better} |")
    return "\n".join(lines)


_BASELINE_LABELS = {"temporal_mean": "temporal-mean frame", "h264": "H.264 at equal bits"}


def baseline_table(result: EvalResult) -> str:
    """Per file (mean over its clips): the tokenizer's PSNR / LPIPS next to each baseline's; empty
    when no baseline was run."""
    names = list(result.settings.get("baselines") or ())
    if not names:
        return ""
    has_lpips = result.aggregates.get("lpips") is not None
    head = ["file", "clips", "tokenizer PSNR"] + [f"{_BASELINE_LABELS.get(n, n)} PSNR" for n in names]
    if has_lpips:
        head += ["tokenizer LPIPS"] + [f"{_BASELINE_LABELS.get(n, n)} LPIPS" for n in names]
    if "h264" in names:
        head += ["H.264 CRF (mean)", "H.264 bits / token bits"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    files: dict[str, list] = {}
    for r in result.records:
        files.setdefault(r.file, []).append(r)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    for f, recs in files.items():
        row = [f"`{f}`", str(len(recs)), f"{mean([r.psnr for r in recs]):.2f}"]
        row += [f"{mean([r.baselines[n]['psnr'] for r in recs]):.2f}" for n in names]
        if has_lpips:
            row += [f"{mean([r.lpips for r in recs]):.3f}"]
            row += [f"{mean([r.baselines[n]['lpips'] for r in recs]):.3f}" for n in names]
        if "h264" in names:
            h = [r.baselines["h264"] for r in recs]
            row += [f"{mean([x['crf'] for x in h]):.1f}", f"{mean([x['bits'] / x['budget_bits'] for x in h]):.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def dataset_table(result: EvalResult) -> str:
    """The Markdown table of data-set numbers (rFVD, codebook usage, compression, throughput)."""
    d = result.dataset
    cb, tp = d["codebook"], d["throughput"]
    fvd = "skipped (see notes)" if d["fvd"] is None else f"{_fmt(d['fvd'], 2)} ({d['fvd_clips']} clips"
    if d["fvd"] is not None:
        fvd += "; small sample, see the caveat)" if d.get("fvd_caveat") else ")"
    shape = "x".join(str(s) for s in d["latent_shape"])
    rows = [
        ("rFVD (I3D, lower is better)", fvd if "fvd" in result.settings["metrics"] else "not requested"),
        ("codebook utilisation", f"{100 * cb['utilization']:.2f} % ({cb['used']} of {cb['codebook_size']} codes, "
                                 f"{cb['tokens']} tokens)"),
        ("codebook perplexity", f"{_fmt(cb['perplexity'], 2)} (entropy {_fmt(cb['entropy_bits'], 3)} bits)"),
        ("bits per token", _fmt(d["bits_per_token"], 2)),
        ("bits per pixel", _fmt(d.get("bits_per_pixel"), 4)),
        ("tokens per clip", f"{d['tokens_per_clip']} ({shape})"),
        ("compression ratio (8-bit RGB bits / token bits)", _fmt(d["compression_ratio"], 2)),
        ("throughput (encode + decode)", f"{_fmt(tp['clips_per_s'], 3)} clips/s, {_fmt(tp['frames_per_s'], 3)} "
                                         f"frames/s on {result.settings['device']} ({tp['timed_clips']} timed clips)"),
    ]
    return "\n".join(["| data-set metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def summary_markdown(result: EvalResult) -> str:
    """The whole ``summary.md``."""
    s, d = result.settings, result.dataset
    h, w = s["size"]
    out = ["# magtok eval", "",
           f"Model `{s['model'] or '(in memory)'}` (fingerprint `{s['fingerprint']}`) on `{s['data']}`: "
           f"{d['clips']} clip(s) of {s['frames']} frames at {h}x{w} from {d['files']} file(s).", "",
           "## Reconstruction (mean over clips of the per-clip mean over frames)", "",
           summary_table(result), "",
           f"Best clip: `{result.best.file}` from frame {result.best.start} (PSNR {result.best.psnr:.2f} dB); "
           f"worst: `{result.worst.file}` from frame {result.worst.start} (PSNR {result.worst.psnr:.2f} dB).", "",
           "## Data set", "", dataset_table(result), ""]
    if result.settings.get("baselines"):
        out[-4:-4] = ["## Per file, next to the baselines", "", baseline_table(result), ""]
    if d.get("fvd_caveat"):
        out += [f"> **FVD caveat:** {d['fvd_caveat']}.", ""]
    out += ["## Settings", ""]
    for k, v in s.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = "x".join(map(str, v)) if k == "size" else ", ".join(map(str, v))
        out.append(f"- **{k}**: {v}")
    out.append("")
    out += [f"## Skipped files ({len(result.skipped)})", ""]
    out += [f"- `{f}`: {r}" for f, r in result.skipped.items()] or ["none"]
    out.append("")
    if result.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------ images
def _plot_psnr(result: EvalResult, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, whatever pyplot's backend
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    values = np.sort(np.array([r.psnr for r in result.records], dtype=np.float64))
    mean = float(values.mean())
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(1, len(values) + 1)
    size = 6 if len(values) <= 100 else 3
    ax.plot(x, values, "o", color="#4c72b0", markersize=size, label="clip")
    ax.axhline(mean, color="#c44e52", linestyle="--", linewidth=1.5, label=f"mean {mean:.2f} dB")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, len(values) + 0.5)
    lo, hi = float(values.min()), float(values.max())
    pad = max(0.5, 0.1 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), hi + pad)
    ax.set_xlabel("clip (sorted by PSNR)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Per-clip PSNR, {len(values)} clip(s)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _strip(original, recon) -> np.ndarray:
    from magtok.training.logging import frame_strip

    img = frame_strip(original[None], recon[None])  # uint8 (2H, k*W, 3): original over reconstruction
    frame_h = original.shape[-2]
    if frame_h < _MIN_STRIP_FRAME_HEIGHT:
        f = math.ceil(_MIN_STRIP_FRAME_HEIGHT / frame_h)
        img = img.repeat(f, axis=0).repeat(f, axis=1)
    return img


def _save_png(img: np.ndarray, path: str) -> None:
    from PIL import Image

    Image.fromarray(img).save(path, format="PNG")


def write_report(result: EvalResult, out_dir="eval", overwrite: bool = False) -> dict[str, Path]:
    """Write results.json, summary.md, psnr_per_clip.png, best_clip.png and worst_clip.png.

    Returns name -> path. Raises FileExistsError for a non-empty ``out_dir`` without ``overwrite``.
    """
    if result.best_clip is None or result.worst_clip is None:
        raise ValueError("the result holds no clip frames for best_clip.png / worst_clip.png (only results "
                         "returned by evaluate() have them)")
    out = check_out_dir(out_dir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in REPORT_FILES}
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    _atomic_write(paths["results.json"], lambda p: Path(p).write_text(text))
    md = summary_markdown(result)
    _atomic_write(paths["summary.md"], lambda p: Path(p).write_text(md))
    _atomic_write(paths["psnr_per_clip.png"], lambda p: _plot_psnr(result, p))
    for name, clip in (("best_clip.png", result.best_clip), ("worst_clip.png", result.worst_clip)):
        img = _strip(*clip)
        _atomic_write(paths[name], lambda p, img=img: _save_png(img, p))
    return paths
