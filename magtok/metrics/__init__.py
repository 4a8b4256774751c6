"""Evaluation metrics: tensors in, numbers out (no file IO).

Per-frame metrics take videos (B, C, T, H, W) or images (B, C, H, W) with values in [-1, 1] and
return (B, T) or (B,):

- :func:`psnr`  dB on the frames mapped to [0, 1] (data range 1), float64; identical -> +inf
  unless ``max_db`` caps it.
- :func:`ssim`  11x11 Gaussian window (sigma 1.5) on [0, 1] RGB, mean over channels.
- :func:`lpips` LPIPS (AlexNet by default, or VGG16), batched over frames.

Aggregate with :func:`clip_means` / :class:`ClipAverage` (mean over clips of per-clip mean over frames).

Set metrics: :func:`fvd` / :class:`FVDAccumulator` (I3D logits of 16-frame 224x224 clips, Fréchet
distance in float64), :func:`frechet_distance` on any features, and codebook usage
(:class:`CodebookUsage`, :func:`bits_per_token`, :func:`compression_ratio`).
"""

from .aggregate import ClipAverage, clip_means, dataset_mean
from .codebook import CodebookStats, CodebookUsage, bits_per_token, codebook_usage, compression_ratio
from .fvd import FVDAccumulator, SmallSampleWarning, frechet_distance, fvd, i3d_features
from .lpips import lpips
from .psnr import psnr
from .ssim import ssim

__all__ = [
    "psnr", "ssim", "lpips", "fvd", "frechet_distance", "i3d_features", "FVDAccumulator", "SmallSampleWarning",
    "CodebookStats", "CodebookUsage", "codebook_usage", "bits_per_token", "compression_ratio",
    "clip_means", "ClipAverage", "dataset_mean",
]
