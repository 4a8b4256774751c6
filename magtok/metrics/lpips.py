"""LPIPS distance per frame (wrapper around :mod:`magtok.nets.lpips` for videos)."""

from __future__ import annotations

import functools

import torch

from ..nets.lpips import LPIPS, LPIPS_NETS, load_lpips
from ._frames import paired_frames

__all__ = ["lpips", "get_lpips_model"]


@functools.lru_cache(maxsize=None)
def get_lpips_model(net: str = "alexnet") -> LPIPS:
    """The pretrained frozen LPIPS for ``net``, loaded once per process (on the CPU)."""
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; known: {list(LPIPS_NETS)}")
    return load_lpips(net)


@torch.no_grad()
def lpips(x: torch.Tensor, y: torch.Tensor, *, net: str = "alexnet", model: LPIPS | None = None,
          batch_size: int = 32) -> torch.Tensor:
    """LPIPS of every frame (lower is more similar, 0 for identical frames).

    Args:
        x, y: videos (B, 3, T, H, W) or images (B, 3, H, W), float, values in [-1, 1].
        net: 'alexnet' (default, the usual LPIPS metric) or 'vgg16'; ignored when ``model`` is given.
        model: an :class:`magtok.nets.lpips.LPIPS` to use (e.g. already on the GPU); by default a
            cached pretrained one, moved to the inputs' device.
        batch_size: frames per network call (memory knob; does not change results beyond float noise).

    Returns:
        float32 tensor (B, T) for videos, (B,) for images.
    """
    fx, fy, unflatten = paired_frames(x, y, "lpips")
    if fx.shape[1] != 3:
        raise ValueError(f"lpips: expected RGB (3 channels); got {fx.shape[1]} channels")
    if model is None:
        model = get_lpips_model(net).to(fx.device)
    out = [model(fx[s:s + batch_size].float(), fy[s:s + batch_size].float())
           for s in range(0, fx.shape[0], max(1, batch_size))]
    return unflatten(torch.cat(out))
