"""Structural similarity (Wang et al. 2004), per frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import reduce

from ._frames import paired_frames

__all__ = ["ssim", "gaussian_window"]


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 2D Gaussian (size, size), the outer product of the 1D kernel exp(-x^2 / 2 sigma^2)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim(x: torch.Tensor, y: torch.Tensor, *, frames_per_chunk: int = 64) -> torch.Tensor:
    """SSIM of every frame: the standard Gaussian-window SSIM on [0, 1] RGB, averaged over channels.

    Args:
        x, y: videos (B, C, T, H, W) or images (B, C, H, W), float, values in [-1, 1]; mapped to
            [0, 1] (data range 1). H, W >= 11.
        frames_per_chunk: frames processed at once (memory knob; does not change results).

    Definition: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample)
    (co)variances, SSIM map taken only where the window fits inside the frame ('valid'), its mean
    per channel, then the mean over channels. This equals ``skimage.metrics.structural_similarity(
    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
    channel_axis=-1)`` on the [0, 1] frames. Identical frames give exactly 1.0.

    Returns:
        tensor (B, T) for videos, (B,) for images (float32, or float64 for float64 inputs).
    """
    fx, fy, unflatten = paired_frames(x, y, "ssim")
    n, c, h, w = fx.shape
    if h < 11 or w < 11:
        raise ValueError(f"ssim: frames must be at least 11x11 for the 11x11 window; got {h}x{w}")
    dtype = torch.float64 if fx.dtype == torch.float64 else torch.float32
    win = gaussian_window(11, 1.5, dtype).to(fx.device).expand(c, 1, 11, 11)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for s in range(0, n, max(1, frames_per_chunk)):
        a = (fx[s:s + frames_per_chunk].to(dtype) + 1) / 2  # (n', C, H, W) in [0, 1]
        b = (fy[s:s + frames_per_chunk].to(dtype) + 1) / 2
        stats = F.conv2d(torch.cat([a, b, a * a, b * b, a * b], dim=1),
                         win.repeat(5, 1, 1, 1), groups=5 * c)  # (n', 5C, H-10, W-10)
        mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(c, dim=1)
        var_a = e_aa - mu_a * mu_a
        var_b = e_bb - mu_b * mu_b
        cov = e_ab - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
        den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
        out.append(reduce(num / den, "n c h w -> n", "mean"))
    return unflatten(torch.cat(out))
