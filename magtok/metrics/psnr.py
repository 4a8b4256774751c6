"""Peak signal-to-noise ratio, per frame."""

from __future__ import annotations

import torch
from einops import reduce

from ._frames import paired_frames

__all__ = ["psnr"]


def psnr(x: torch.Tensor, y: torch.Tensor, *, max_db: float | None = None) -> torch.Tensor:
    """PSNR in dB of every frame.

    Args:
        x, y: videos (B, C, T, H, W) or images (B, C, H, W), float, values in [-1, 1] (the
            library's convention). They are mapped to [0, 1] and compared with data range 1, which
            equals the usual 8-bit PSNR ``10 log10(255^2 / MSE_u8)`` of the same frames. Values are
            not clamped: clamp reconstructions to [-1, 1] first to score what a saved video shows.
        max_db: None (default) leaves identical frames at ``+inf``; a number caps every value at it
            (e.g. 100.0, so that averages over data sets stay finite).

    Returns:
        float64 tensor (B, T) for videos, (B,) for images: ``10 log10(1 / MSE)`` with the MSE over
        (C, H, W) of the [0, 1] frames, computed in float64.
    """
    fx, fy, unflatten = paired_frames(x, y, "psnr")
    diff = (fx.double() - fy.double()) / 2.0  # [-1, 1] -> [0, 1] scale; the offset cancels
    mse = reduce(diff * diff, "n c h w -> n", "mean")
    out = 10.0 * torch.log10(1.0 / mse)  # mse == 0 -> +inf
    if max_db is not None:
        out = out.clamp(max=float(max_db))
    return unflatten(out)
