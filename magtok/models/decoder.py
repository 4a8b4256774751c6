"""The decoder: mirrored layer-spec blocks -> causal output conv. Latents -> video."""

from __future__ import annotations

import torch
from torch import nn

from magtok.configs import TokenizerConfig
from magtok.layers import CausalConv3d, SameConv2d
from magtok.models.encoder import cond_stem


class Decoder(nn.Module):
    """Quantized latents (B, D, T', H', W') -> video (B, C, T, H, W), T = 1 + (T'-1)*r_t with
    ``first_frame=True`` (the r_t - 1 leading pad positions are dropped), else T'*r_t."""

    def __init__(self, cfg: TokenizerConfig, blocks: list[nn.Module], time_factor: int):
        super().__init__()
        self.time_pad = time_factor - 1
        self.cond_in = cond_stem(cfg.dim_cond, cfg.dim_cond_expansion_factor)
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = CausalConv3d(cfg.init_dim, cfg.channels, cfg.output_conv_kernel_size, cfg.pad_mode)
        self.conv_out_first_frame = (SameConv2d(cfg.init_dim, cfg.channels, cfg.output_conv_kernel_size[1:])
                                     if cfg.separate_first_frame_encoding else None)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None,
                first_frame: bool = True) -> torch.Tensor:
        c = self.cond_in(cond) if self.cond_in is not None and cond is not None else None
        x = z
        for block in self.blocks:
            x = block(x, c)
        p = self.time_pad
        if first_frame and self.conv_out_first_frame is not None:
            out = self.conv_out_first_frame(x[:, :, p]).unsqueeze(2)
            if x.shape[2] > p + 1:
                out = torch.cat((out, self.conv_out(x[:, :, p + 1:])), dim=2)
            return out
        out = self.conv_out(x)
        return out[:, :, p:] if first_frame else out
