"""Run logging: Accelerate's trackers (TensorBoard by default), a metrics.jsonl for plots, a log file.

Messages go to the stdlib logger ``magtok.training`` (the ``magtok`` command prints them to stderr;
a library user configures ``logging`` as usual) and to ``train.log`` in the run folder. Scalars go
to every tracker the Accelerator was built with (``log_with``: "tensorboard", "wandb", "mlflow",
...) and to ``metrics.jsonl``; sample strips to ``samples/step_N.png`` and to TensorBoard. Only the
main process writes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("magtok.training")


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


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """A config dict flattened to ``{"optim.lr": 1e-4, ...}`` with scalar values (what trackers store)."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class RunLogger:
    """Writes ``metrics.jsonl``, ``train.log`` and ``samples/step_N.png`` under the run folder and
    forwards scalars and images to the accelerator's trackers. Only the main process writes
    (``enabled``)."""

    def __init__(self, run_dir: Path, enabled: bool = True, accelerator=None):
        self.run_dir, self.enabled, self.acc = Path(run_dir), enabled, accelerator
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "samples").mkdir(exist_ok=True)

    def info(self, msg: str, level: int = logging.INFO) -> None:
        if not self.enabled:
            return
        log.log(level, msg)
        with open(self.run_dir / "train.log", "a") as f:
            f.write(f"[magtok {time.strftime('%H:%M:%S')}] {msg}\n")

    def warning(self, msg: str) -> None:
        self.info(msg, logging.WARNING)

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled or not values:
            return
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) or torch.is_tensor(v)}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self.acc is not None and self.acc.trackers:
            self.acc.log(clean, step=step)

    def images(self, step: int, original: torch.Tensor, recon: torch.Tensor) -> Path | None:
        if not self.enabled:
            return None
        from PIL import Image

        strip = frame_strip(original, recon)
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        Image.fromarray(strip).save(path)
        for tracker in (self.acc.trackers if self.acc is not None else []):
            if tracker.name == "tensorboard":
                tracker.writer.add_image("val/original_over_recon", strip, step, dataformats="HWC")
            elif hasattr(tracker, "log_images"):
                try:
                    tracker.log_images({"val/original_over_recon": [strip]}, step=step)
                except Exception as e:  # a tracker that takes images differently: scalars still go
                    log.debug("tracker %s did not take the sample strip: %s", tracker.name, e)
        return path

    def close(self) -> None:
        if self.enabled and self.acc is not None and self.acc.trackers:
            for tracker in self.acc.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.flush()
