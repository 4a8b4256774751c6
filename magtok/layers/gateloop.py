"""A simple gate loop over time (arXiv 2311.01927, simplified): per channel,
h_t = a_t * h_(t-1) + kv_t with a_t = sigmoid(.), output q_t * h_t. Causal and streamable."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from magtok.layers.norms import RMSNorm
from magtok.layers.streaming import StreamingModule


class GateLoop(StreamingModule):
    """Residual gate loop along time at each position: (B, C, T, H, W) -> same."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkva = nn.Linear(dim, dim * 3, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = rearrange(x, "b c t h w -> (b h w) t c")
        q, kv, a = self.to_qkva(self.norm(seq)).chunk(3, dim=-1)
        a = torch.sigmoid(a)
        state = self._stream.get("h") if self._stream is not None else None
        hs = []
        for i in range(t):
            state = kv[:, i] if state is None else torch.addcmul(kv[:, i], a[:, i], state)
            hs.append(state)
        if self._stream is not None:
            # a copy: ``state`` may be a view of this chunk's projections, which it would keep alive
            self._stream["h"] = state.clone()
        out = q * torch.stack(hs, dim=1)
        return x + rearrange(out, "(b h w) t c -> b c t h w", b=b, h=h, w=w)
