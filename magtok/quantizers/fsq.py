"""Finite scalar quantization (arXiv 2309.15505).

Each of len(levels) channels is bounded with tanh to L_i levels and rounded (straight-through).
Codes are mixed-radix integers, channel 0 the least significant digit:
code = sum_i level_index_i * prod_{j<i} L_j, in [0, prod L).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from magtok.quantizers.base import Quantizer, QuantizerOutput, code_usage_metrics


class FSQ(Quantizer):
    """z (B, D, T, H, W) -> QuantizerOutput with codes in [0, prod(levels)). No aux loss."""

    def __init__(self, dim: int, levels=(8, 8, 8, 5, 5, 5), num_codebooks: int = 1, eps: float = 1e-3):
        super().__init__(dim)
        levels = tuple(int(v) for v in levels)
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must all be >= 2, got {levels}")
        self.levels, self.num_codebooks, self.eps = levels, num_codebooks, eps
        self.codebook_size = int(math.prod(levels))
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor((1,) + levels[:-1]), 0)
        self.register_buffer("_basis", basis.long(), persistent=False)
        code_dims = len(levels) * num_codebooks
        self.project_in = nn.Linear(dim, code_dims) if dim != code_dims else nn.Identity()
        self.project_out = nn.Linear(code_dims, dim) if dim != code_dims else nn.Identity()

    def _bound(self, x: torch.Tensor) -> torch.Tensor:
        half_l = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(x + shift) * half_l - offset

    def forward(self, z: torch.Tensor, compute_loss: bool = True) -> QuantizerOutput:
        with torch.autocast(z.device.type, enabled=False):
            tokens, grid = self._to_tokens(z.float())
            x = self.project_in(tokens).view(tokens.shape[0], self.num_codebooks, len(self.levels))
            bounded = self._bound(x)
            rounded = bounded + (bounded.round() - bounded).detach()
            half_width = torch.div(self._levels, 2, rounding_mode="floor")
            zhat = rounded / half_width
            level_idx = (rounded.detach() + half_width).round().long()  # (N, C, d) in [0, L)
            codes = (level_idx * self._basis).sum(-1)
            out = self.project_out(zhat.reshape(zhat.shape[0], -1))
            metrics = code_usage_metrics(codes, self.codebook_size) if compute_loss else {}
        return QuantizerOutput(self._from_tokens(out, grid), self._codes_grid(codes, grid),
                               out.new_zeros(()), metrics)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self.check_codes(codes)
        grid = codes.shape[:4]
        flat = codes.reshape(-1, self.num_codebooks, 1)
        level_idx = torch.div(flat, self._basis, rounding_mode="floor") % self._levels.long()
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        zhat = (level_idx.float() - half_width) / half_width
        return self._from_tokens(self.project_out(zhat.reshape(zhat.shape[0], -1)), grid)
