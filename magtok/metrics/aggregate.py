"""Aggregating per-frame metric values: the mean over clips of each clip's mean over frames."""

from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["clip_means", "ClipAverage", "dataset_mean"]


def clip_means(per_frame: torch.Tensor) -> torch.Tensor:
    """Per-clip means: (B, T) -> (B,) mean over frames; (B,) (images) is returned as is (float64)."""
    if not isinstance(per_frame, torch.Tensor) or per_frame.ndim not in (1, 2):
        shape = tuple(per_frame.shape) if isinstance(per_frame, torch.Tensor) else type(per_frame).__name__
        raise ValueError(f"expected per-frame values (B, T) or per-image values (B,); got {shape}")
    v = per_frame.detach().double()
    return v.mean(dim=1) if v.ndim == 2 else v


class ClipAverage:
    """Running data-set mean of a per-frame metric: ``update(values)`` per batch, ``compute()``.

    Every clip counts once, whatever its length: the result is the mean over clips of the per-clip
    mean over frames. An ``inf`` (e.g. PSNR of a perfect frame without ``max_db``) makes it ``inf``.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, per_frame: torch.Tensor) -> None:
        m = clip_means(per_frame)
        self.total += float(m.sum())
        self.count += m.numel()

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("ClipAverage.compute: no values yet; call update(per_frame) first")
        return self.total / self.count

    def reset(self) -> None:
        self.total, self.count = 0.0, 0


def dataset_mean(batches: Iterable[torch.Tensor]) -> float:
    """Mean over all clips of the per-clip mean over frames, from per-frame values of several batches.

    Raises ValueError when there are no values.
    """
    acc = ClipAverage()
    for b in batches:
        acc.update(b)
    return acc.compute()
