"""magtok-small's learning curve over its training stages (MODEL_CARD.md).

    python benchmarks/small_curves.py [--out benchmarks/results/magtok-small/training_curves.png]

Reads ``benchmarks/results/magtok-small/metrics.jsonl`` (stage 1, configs/small.yaml) and
``stageN_metrics.jsonl`` (stages 2, 3, ...: configs/small_continue.yaml, each starting from the
previous stage's EMA weights), puts each stage's steps after the previous one's, and plots the
validation PSNR/SSIM (EMA weights, 3 centre windows of the held-out clips) and the training losses with the learning rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "magtok-small"


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def stages(folder: Path = RESULTS) -> list[tuple[str, int, list[dict]]]:
    """[(label, step offset, rows)] for the stages found in ``folder``."""
    out, offset = [], 0
    names = [("stage 1", "metrics.jsonl")] + [(f"stage {k} (restart)", f"stage{k}_metrics.jsonl") for k in range(2, 10)]
    for label, name in names:
        rows = _rows(folder / name)
        if rows:
            out.append((label, offset, rows))
            offset += max(r["step"] for r in rows)
    return out


def plot(folder: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    a2, b2 = a.twinx(), b.twinx()
    colours = [c for i, c in enumerate(plt.rcParams["axes.prop_cycle"].by_key()["color"]) if i != 7]  # no grey
    for k, (label, off, rows) in enumerate(stages(folder)):
        c = colours[k % len(colours)]
        val = [(off + r["step"], r["val/psnr"], r.get("val/ssim")) for r in rows if "val/psnr" in r]
        if val:
            a.plot([v[0] for v in val], [v[1] for v in val], marker=".", color=c, label=f"PSNR, {label}")
            a2.plot([v[0] for v in val], [v[2] for v in val], ls="--", alpha=0.6, color=c)
        tr = [r for r in rows if "loss/recon" in r]
        b.plot([off + r["step"] for r in tr], [r["loss/recon"] for r in tr], lw=0.8, color=c, label=label)
        b.plot([off + r["step"] for r in tr], [r["loss/perceptual"] for r in tr], lw=0.8, color=c, alpha=0.5)
        b2.plot([off + r["step"] for r in tr], [r["optim/lr"] for r in tr], color="grey", lw=0.8)
    b2.set_ylabel("learning rate (grey)")
    a.set_xlabel("step")
    a.set_ylabel("held-out PSNR (dB), EMA")
    a2.set_ylabel("SSIM (dashed)")
    a.set_title("validation: 3 centre windows of bikes / carphone")
    a.legend(loc="lower right", fontsize=8)
    b.set_xlabel("step")
    b.set_yscale("log")
    b.set_title("training losses (log scale): L1 above, LPIPS term below")
    b.legend(fontsize=8)
    fig.tight_layout()
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    plot(a.folder, a.out or a.folder / "training_curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
