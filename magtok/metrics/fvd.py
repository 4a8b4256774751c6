"""Fréchet video distance: I3D Kinetics-400 logits of 16-frame clips, Fréchet distance in float64.

Recipe (as in the original FVD of Unterthiner et al., TF-GAN, StyleGAN-V):

1. clips (B, 3, 16, H, W) in [-1, 1]; every frame resized to 224x224 (bilinear, antialias,
   align_corners False; no crop, so non-square frames are stretched);
2. I3D (:mod:`magtok.nets.i3d`) -> the 400 pre-softmax logits averaged over time, one vector per clip;
3. Fréchet distance between the two sets of vectors:
   ``|mu_x - mu_y|^2 + tr S_x + tr S_y - 2 tr sqrtm(S_x S_y)``, covariances with ddof=1, all in
   float64, the real part of ``scipy.linalg.sqrtm``, no unconditional eps added to the covariances.

FVD is strongly biased for small sets: with fewer clips than feature dimensions the covariances are
singular. :func:`frechet_distance` warns below ``2 * d`` clips per set (800 for I3D logits);
published numbers usually use 2048 clips or more. Compare FVDs only at equal set sizes.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from einops import rearrange

from ..nets.i3d import InceptionI3d, load_i3d

__all__ = ["frechet_distance", "i3d_features", "fvd", "FVDAccumulator", "get_i3d_model", "SmallSampleWarning",
           "FVD_NUM_FRAMES",
           "FVD_RESOLUTION"]

FVD_NUM_FRAMES = 16
FVD_RESOLUTION = 224


class SmallSampleWarning(UserWarning):
    """Too few samples for a trustworthy Fréchet distance."""


def _as_float64(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"frechet_distance: {name} must be (N, d) features; got shape {a.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"frechet_distance: {name} has {a.shape[0]} sample(s); a covariance needs at least 2")
    if not np.isfinite(a).all():
        raise ValueError(f"frechet_distance: {name} contains NaN or inf")
    return a


def frechet_distance(x, y, *, warn_below: int | None = None) -> float:
    """Fréchet distance between two feature sets, in float64.

    Args:
        x: (N, d) features (numpy array or tensor), y: (M, d).
        warn_below: warn (SmallSampleWarning) when N or M is below this; default ``2 * d``.
            Pass 0 to silence.

    Returns:
        ``|mu_x - mu_y|^2 + tr S_x + tr S_y - 2 Re tr sqrtm(S_x S_y)`` with ``np.cov`` (ddof=1)
        covariances, as a Python float (>= 0 up to rounding; ~0 for identical sets).
    """
    x, y = _as_float64(x, "x"), _as_float64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"frechet_distance: feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    d = x.shape[1]
    limit = 2 * d if warn_below is None else warn_below
    if min(len(x), len(y)) < limit:
        warnings.warn(f"Fréchet distance from {len(x)} and {len(y)} samples of dimension {d}: below "
                      f"{limit} samples the estimate is strongly biased (singular covariances when "
                      f"N <= d); compare only numbers computed with equal set sizes",
                      SmallSampleWarning, stacklevel=2)
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)  # ddof=1
    s_x, s_y = np.atleast_2d(s_x), np.atleast_2d(s_y)
    covmean = scipy.linalg.sqrtm(s_x @ s_y)
    if not np.isfinite(covmean).all():  # only then, as pytorch-fid does: regularise
        warnings.warn("sqrtm(S_x S_y) is not finite; adding 1e-6 I to the covariances", RuntimeWarning,
                      stacklevel=2)
        offset = np.eye(d) * 1e-6
        covmean = scipy.linalg.sqrtm((s_x + offset) @ (s_y + offset))
    diff = mu_x - mu_y
    return float(diff @ diff + np.trace(s_x) + np.trace(s_y) - 2.0 * np.trace(covmean).real)


@functools.lru_cache(maxsize=None)
def get_i3d_model() -> InceptionI3d:
    """The pretrained frozen I3D, loaded once per process (on the CPU)."""
    return load_i3d()


@torch.no_grad()
def i3d_features(video: torch.Tensor, *, model: InceptionI3d | None = None, batch_size: int = 8,
                 num_frames: int | None = FVD_NUM_FRAMES) -> torch.Tensor:
    """FVD features of clips: I3D Kinetics-400 logits.

    Args:
        video: (B, 3, T, H, W) float in [-1, 1]. Frames are resized to 224x224 (bilinear, antialias).
        model: an :class:`magtok.nets.i3d.InceptionI3d`; by default a cached pretrained one moved to
            the video's device.
        batch_size: clips per network call.
        num_frames: required T (16, the FVD standard). Slice longer clips yourself (e.g.
            ``video[:, :, :16]`` for 17-frame tokenizer clips); None accepts any T >= 9.

    Returns:
        float32 tensor (B, 400).
    """
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"i3d_features: expected video (B, 3, T, H, W) in [-1, 1]; got {shape}")
    if not video.is_floating_point():
        raise ValueError(f"i3d_features: expected float values in [-1, 1]; got {video.dtype}. "
                         f"Convert uint8 frames with `u8.float() / 127.5 - 1`.")
    b, _, t, h, w = video.shape
    if num_frames is not None and t != num_frames:
        raise ValueError(f"i3d_features: video has {t} frames; FVD uses {num_frames}-frame clips. Pass "
                         f"video[:, :, :{num_frames}] (or num_frames=None to feed all {t} frames)")
    if model is None:
        model = get_i3d_model().to(video.device)
    out = []
    for s in range(0, b, max(1, batch_size)):
        clip = video[s:s + batch_size].float()
        if (h, w) != (FVD_RESOLUTION, FVD_RESOLUTION):
            n = clip.shape[0]
            frames = rearrange(clip, "b c t h w -> (b t) c h w")
            frames = F.interpolate(frames, size=(FVD_RESOLUTION, FVD_RESOLUTION), mode="bilinear",
                                   align_corners=False, antialias=True)
            clip = rearrange(frames, "(b t) c h w -> b c t h w", b=n).contiguous()  # strided input: ~2x slower convs
        out.append(model(clip).logits)
    return torch.cat(out)


def fvd(real: torch.Tensor, fake: torch.Tensor, *, model: InceptionI3d | None = None, batch_size: int = 8,
        warn_below: int | None = None) -> float:
    """FVD between two sets of 16-frame clips (B, 3, 16, H, W) in [-1, 1] (see the module notes).

    For data sets larger than memory, use :class:`FVDAccumulator`.
    """
    fr = i3d_features(real, model=model, batch_size=batch_size)
    ff = i3d_features(fake, model=model, batch_size=batch_size)
    return frechet_distance(fr, ff, warn_below=warn_below)


class FVDAccumulator:
    """FVD over a data set, batch by batch: keeps only the (N, 400) features.

    >>> acc = FVDAccumulator()
    >>> for real, fake in batches:          # (B, 3, 16, H, W) in [-1, 1] each
    ...     acc.update(real=real, fake=fake)
    >>> acc.compute()                        # float
    """

    def __init__(self, *, model: InceptionI3d | None = None, batch_size: int = 8):
        self.model, self.batch_size = model, batch_size
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []

    def update(self, real: torch.Tensor | None = None, fake: torch.Tensor | None = None) -> None:
        """Add clips to either or both sets."""
        if real is not None:
            self.real.append(i3d_features(real, model=self.model, batch_size=self.batch_size).cpu())
        if fake is not None:
            self.fake.append(i3d_features(fake, model=self.model, batch_size=self.batch_size).cpu())

    def compute(self, *, warn_below: int | None = None) -> float:
        if not self.real or not self.fake:
            raise ValueError("FVDAccumulator.compute: add real and fake clips with update() first")
        return frechet_distance(torch.cat(self.real), torch.cat(self.fake), warn_below=warn_below)
