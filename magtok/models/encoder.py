"""The encoder: causal input conv -> layer-spec blocks -> LayerNorm. Video -> latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magtok.configs import TokenizerConfig
from magtok.layers import CausalConv3d, ChannelLayerNorm, SameConv2d


def cond_stem(dim_cond: int | None, expansion: float) -> nn.Module | None:
    if dim_cond is None:
        return None
    return nn.Sequential(nn.Linear(dim_cond, int(dim_cond * expansion)), nn.SiLU())


def prequant_norm(kind: str, dim: int) -> nn.Module:
    """The normalisation right before the quantizer."""
    if kind == "layernorm":
        return ChannelLayerNorm(dim)
    if kind == "groupnorm":
        return nn.GroupNorm(1, dim, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"prequant_norm {kind!r} is not supported; use 'layernorm', 'groupnorm' or 'none'")


class Encoder(nn.Module):
    """(B, C, T, H, W) in [-1, 1] -> latents (B, D, T', H', W').

    With ``first_frame=True`` the clip (1 + k*r_t frames) is left-padded with r_t - 1 zero frames
    so that frame 0 forms the first latent frame on its own (see magtok.layers.resample). With
    ``first_frame=False`` the clip (k*r_t frames) continues an earlier one.
    """

    def __init__(self, cfg: TokenizerConfig, blocks: list[nn.Module], dim_out: int, time_factor: int):
        super().__init__()
        self.time_pad = time_factor - 1
        self.conv_in = CausalConv3d(cfg.channels, cfg.init_dim, cfg.input_conv_kernel_size, cfg.pad_mode)
        self.conv_in_first_frame = (SameConv2d(cfg.channels, cfg.init_dim, cfg.input_conv_kernel_size[1:])
                                    if cfg.separate_first_frame_encoding else None)
        self.cond_in = cond_stem(cfg.dim_cond, cfg.dim_cond_expansion_factor)
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = prequant_norm(cfg.prequant_norm, dim_out)

    def forward(self, video: torch.Tensor, cond: torch.Tensor | None = None,
                first_frame: bool = True) -> torch.Tensor:
        pad = (0, 0, 0, 0, self.time_pad, 0)
        if first_frame and self.conv_in_first_frame is not None:
            x = self.conv_in_first_frame(video[:, :, 0]).unsqueeze(2)
            if video.shape[2] > 1:
                x = torch.cat((x, self.conv_in(video[:, :, 1:])), dim=2)
            x = F.pad(x, pad)
        elif first_frame:
            x = self.conv_in(F.pad(video, pad))
        else:
            x = self.conv_in(video)
        c = self.cond_in(cond) if self.cond_in is not None and cond is not None else None
        for block in self.blocks:
            x = block(x, c)
        return self.norm_out(x)
