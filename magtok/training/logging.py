"""Run logging: TensorBoard scalars and images, a metrics.jsonl for plots, and a log file."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def frame_strip(original: torch.Tensor, recon: torch.Tensor, max_frames: int = 8) -> np.ndarray:
    """Original frames over reconstructed frames, one clip after another: uint8 (H, W, 3).

    original, recon: (B, 3, T, H, W) in [-1, 1].
    """
    rows = []
    for o, r in zip(original, recon):
        idx = np.linspace(0, o.shape[1] - 1, min(max_frames, o.shape[1])).round().astype(int)
        top = torch.cat([o[:, i] for i in idx], dim=2)
        bottom = torch.cat([r[:, i] for i in idx], dim=2)
        rows.append(torch.cat([top, bottom], dim=1))
    img = torch.cat(rows, dim=1)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


class RunLogger:
    """Writes ``metrics.jsonl``, ``train.log``, ``samples/step_N.png`` and TensorBoard events
    (``tb/``) under the run folder. Only the main process writes (``enabled``)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._tb = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "samples").mkdir(exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception as e:  # tensorboard missing or broken: keep the JSONL log
                self.info(f"TensorBoard logging disabled ({e})")

    def info(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"[magtok {time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        with open(self.run_dir / "train.log", "a") as f:
            f.write(line + "\n")

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled or not values:
            return
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) or torch.is_tensor(v)}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)

    def images(self, step: int, original: torch.Tensor, recon: torch.Tensor) -> Path | None:
        if not self.enabled:
            return None
        from PIL import Image

        strip = frame_strip(original, recon)
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        Image.fromarray(strip).save(path)
        if self._tb is not None:
            self._tb.add_image("val/original_over_recon", strip, step, dataformats="HWC")
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
