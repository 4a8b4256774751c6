"""Summarise the recipe runs for magtok-small (BENCHMARKS.md, "Recipe").

Each short run is ``magtok train --config configs/small.yaml --threads 1 output_dir=RUNS/NAME
max_minutes=M steps=S val_every=50 [overrides]``; the runs of one round train side by side on the
same machine for the same wall clock (see ``RUNS`` below for the exact overrides). This script reads
every run folder and scores its exported EMA model on the held-out clips with
``magtok.evaluation.evaluate`` (PSNR, SSIM, LPIPS-Alex; ``--clips-per-video`` windows of 17 frames at
64x64 from bikes, carphone_distorted, carphone_pristine), then writes
``benchmarks/results/recipe.json``, ``benchmarks/results/recipe_curves.png`` and prints the table.

    python benchmarks/recipe.py --runs /work/runs/recipe [--eval-data data/small/eval]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
FSQ = "'model_overrides={quantizer: {kind: fsq, levels: [8, 8, 8, 6, 5]}}'"
S8 = ("'model_overrides={layers: [residual, [compress_space, 64], residual, [compress_space, 128], "
      "[compress_time, 128], residual, [compress_space, 128], [compress_time, 128], residual]}'")
# name -> (round, minutes, steps for the cosine schedule, overrides, what it tests)
RUNS = {
    "base": (1, 28, 420, "", "baseline: LFQ 2^14, r_s=4, LPIPS 0.1, no GAN, lr 4e-4, batch 2, bf16, 60% moving stills"),
    "fsq": (1, 28, 420, FSQ, "FSQ 8-8-8-6-5 (15360 codes, 13.9 bits) instead of LFQ 2^14"),
    "ent0": (1, 28, 420, "'model_overrides={quantizer: {entropy_loss_weight: 0.0}}'", "LFQ entropy loss weight 0 (was 0.1)"),
    "percoff": (1, 28, 480, "loss.perceptual_weight=0", "no perceptual loss"),
    "s8": (1, 28, 460, S8, "spatial ratio 8 (5x8x8 codes) instead of 4"),
    "stills0": (1, 28, 420, "data.still_motion=0", "no moving stills: bigbuckbunny only"),
    "fsq_r2": (2, 28, 230, FSQ, "round-2 baseline: the fsq run again (noise across rounds)"),
    "fsq_adv": (2, 28, 170, FSQ + " loss.discriminator=frame loss.adversarial_weight=0.1 loss.discriminator_dim=16 "
                "loss.adversarial_start_step=100 loss.lecam_weight=0.001 optim.disc_lr=0.0001",
                "+ adversarial loss (frame discriminator, dim 16) from step 100"),
    "fsq_lr1e3": (2, 28, 230, FSQ + " optim.lr=0.001 optim.warmup_steps=50", "+ lr 1e-3, warm-up 50"),
    "fsq_fp32": (2, 28, 120, FSQ + " 'mixed_precision=\"no\"'", "+ float32 instead of bf16 autocast"),
    "fsq_b4": (2, 28, 120, FSQ + " batch_size=4", "+ batch 4 instead of 2"),
    "fsq_img": (2, 28, 260, FSQ + " data.images=true data.image_batch_ratio=0.25",
                "+ one-frame photo batches every 4th step (invalid: its image steps were skipped, see round 3)"),
    # round 3: from configs/small.yaml as shipped (FSQ, lr 1e-3, warm-up 100); three runs side by side
    # while the stage-2 long run trained on the same machine (each run about a third of a core)
    "r3_base": (3, 20, 350, "", "round-3 baseline: configs/small.yaml as shipped (warm-up 100)"),
    "r3_img": (3, 20, 350, "data.images=true data.image_batch_ratio=0.25",
               "+ one-frame photo batches every 4th step (after the bf16 short-clip fix)"),
    "r3_wu20": (3, 20, 350, "optim.warmup_steps=20", "warm-up 20 steps instead of 100"),
}


def command(name: str) -> str:
    rnd, minutes, steps, overrides, _ = RUNS[name]
    return (f"magtok train --config configs/small.yaml --threads 1 output_dir=RUNS/{name} max_minutes={minutes} "
            f"steps={steps} val_every=50 {overrides}").strip()


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def summarise(run: Path, eval_data: Path | None, clips_per_video: int) -> dict:
    rows = _rows(run / "metrics.jsonl")
    val = [(r["step"], r["val/psnr"], r.get("val/ssim")) for r in rows if "val/psnr" in r]
    train = [r for r in rows if "perf/steps_per_s" in r]
    out = {
        "steps": max((r["step"] for r in rows), default=0),
        "val_curve": [[s, p] for s, p, _ in val],
        "val_psnr_final": val[-1][1] if val else None,
        "val_ssim_final": val[-1][2] if val else None,
        "sec_per_step": (sum(1 / r["perf/steps_per_s"] for r in train) / len(train)) if train else None,
    }
    if eval_data is not None and (run / "model").is_dir():
        from magtok.evaluation import evaluate

        res = evaluate(run / "model", eval_data, frames=17, size=64, metrics=("psnr", "ssim", "lpips"),
                       clips_per_video=clips_per_video, progress=False)
        out["eval"] = {k: res.aggregates[k]["mean"] for k in ("psnr", "ssim", "lpips")}
        out["eval"]["clips"] = res.dataset["clips"]
        out["eval"]["code_usage"] = res.dataset["codebook"]["utilization"]
    return out


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = max(RUNS.get(name, (1,))[0] for name in results) if results else 1
    fig, axes = plt.subplots(1, rounds, figsize=(6 * rounds, 4), sharey=True, squeeze=False)
    axes = axes[0]
    for name, r in results.items():
        rnd = RUNS.get(name, (1,))[0]
        if r["val_curve"]:
            axes[rnd - 1].plot(*zip(*r["val_curve"]), marker=".", label=name)
    for i, ax in enumerate(axes):
        ax.set_title(f"round {i + 1}: held-out PSNR (EMA, 3 centre windows)")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("PSNR (dB)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def table(results: dict) -> str:
    lines = ["| round | run | what changes | minutes | steps | s/step | held-out PSNR | SSIM | LPIPS | code use |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rnd, minutes, _, _, what = RUNS.get(name, (0, 0, 0, "", ""))
        e = r.get("eval") or {}
        f = lambda v, d: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        lines.append(f"| {rnd} | `{name}` | {what} | {minutes} | {r['steps']} | {f(r['sec_per_step'], 1)} | "
                     f"{f(e.get('psnr'), 2)} | {f(e.get('ssim'), 3)} | {f(e.get('lpips'), 3)} | "
                     f"{f(e.get('code_usage'), 3)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="folder holding one sub-folder per run")
    p.add_argument("--eval-data", default="data/small/eval")
    p.add_argument("--clips-per-video", type=int, default=4)
    p.add_argument("--only", nargs="*", default=None, help="run names (default: all found)")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    out_json = BENCH_DIR / "results" / "recipe.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    names = a.only or [n for n in RUNS if (runs / n / "metrics.jsonl").exists()]
    for name in names:
        print(f"scoring {name} ...", file=sys.stderr, flush=True)
        results[name] = summarise(runs / name, Path(a.eval_data) if a.eval_data else None, a.clips_per_video)
        results[name]["command"] = command(name) if name in RUNS else None
    results = {n: results[n] for n in RUNS if n in results} | {n: v for n, v in results.items() if n not in RUNS}
    tmp = out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out_json)
    plot(results, BENCH_DIR / "results" / "recipe_curves.png")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
