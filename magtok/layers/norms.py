"""RMSNorm and adaptive (condition-modulated) RMSNorm, channel-last or channel-first."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x / ||x|| * sqrt(dim) * gamma over the channel axis (last, or 1 if ``channel_first``)."""

    def __init__(self, dim: int, channel_first: bool = False, spatial_dims: int = 3):
        super().__init__()
        self.channel_first = channel_first
        self.scale = dim**0.5
        shape = (dim, *((1,) * spatial_dims)) if channel_first else (dim,)
        self.gamma = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(x, dim=1 if self.channel_first else -1) * self.scale * self.gamma


class AdaptiveRMSNorm(nn.Module):
    """RMSNorm whose gain is predicted from a condition vector ``cond`` (B, dim_cond)."""

    def __init__(self, dim: int, dim_cond: int, channel_first: bool = False):
        super().__init__()
        self.channel_first = channel_first
        self.dim_cond = dim_cond
        self.scale = dim**0.5
        self.to_gamma = nn.Linear(dim_cond, dim)
        nn.init.zeros_(self.to_gamma.weight)
        nn.init.ones_(self.to_gamma.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            raise ValueError("this layer is conditioned: pass cond=(B, dim_cond) to the tokenizer")
        gamma = self.to_gamma(cond)  # (B, dim)
        if self.channel_first:
            gamma = gamma.reshape(*gamma.shape, *((1,) * (x.ndim - 2)))
        else:
            gamma = gamma.reshape(gamma.shape[0], *((1,) * (x.ndim - 2)), gamma.shape[-1])
        return F.normalize(x, dim=1 if self.channel_first else -1) * self.scale * gamma


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels of (B, C, ...) tensors (the norm right before the quantizer)."""

    def __init__(self, dim: int, affine: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)
