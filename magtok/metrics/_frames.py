"""Shared input handling of the per-frame metrics: videos or images -> a stack of frames."""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange


def paired_frames(x: torch.Tensor, y: torch.Tensor, metric: str
                  ) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Check a pair of videos (B, C, T, H, W) or images (B, C, H, W) and flatten them to frames.

    Returns ``(fx, fy, unflatten)``: frames (N, C, H, W) and a function turning per-frame values
    (N,) back into (B, T) for videos or (B,) for images.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{metric}: expected torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ValueError(f"{metric}: the two inputs must have the same shape; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"{metric}: expected float tensors in [-1, 1]; got {x.dtype} and {y.dtype}. "
                         f"Convert uint8 frames with `u8.float() / 127.5 - 1`.")
    if x.ndim == 5:
        b, t = x.shape[0], x.shape[2]
        fx = rearrange(x, "b c t h w -> (b t) c h w")
        fy = rearrange(y, "b c t h w -> (b t) c h w")
        return fx, fy, lambda v: rearrange(v, "(b t) -> b t", b=b, t=t)
    if x.ndim == 4:
        return x, y, lambda v: v
    raise ValueError(f"{metric}: expected videos (B, C, T, H, W) or images (B, C, H, W); got shape "
                     f"{tuple(x.shape)}")
