"""Attention over space (per frame), causal attention over time, Taylor linear attention over
space, the GEGLU feed-forward, and token shifting. All take and return (B, C, T, H, W).

Softmax attention runs on ``torch.nn.functional.scaled_dot_product_attention`` with learned
memory key-values that every query can see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from magtok.layers.conv import pointwise_conv3d
from magtok.layers.norms import AdaptiveRMSNorm, RMSNorm
from magtok.layers.streaming import StreamingModule


def _norm(dim: int, dim_cond: int | None, channel_first: bool = False) -> nn.Module:
    if dim_cond is None:
        return RMSNorm(dim, channel_first=channel_first)
    return AdaptiveRMSNorm(dim, dim_cond, channel_first=channel_first)


class Attention(nn.Module):
    """Multi-head softmax attention over sequences (B, N, C) with ``num_memory_kv`` learned
    key-values prepended. ``causal`` masks later positions (memory stays visible)."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 32, num_memory_kv: int = 4,
                 causal: bool = False, dim_cond: int | None = None):
        super().__init__()
        if num_memory_kv < 1:
            raise ValueError("num_memory_kv must be >= 1")
        self.heads, self.causal = heads, causal
        inner = heads * dim_head
        self.norm = _norm(dim, dim_cond)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.mem_kv = nn.Parameter(torch.randn(2, heads, num_memory_kv, dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def qkv(self, x: torch.Tensor, cond: torch.Tensor | None):
        x = self.norm(x, cond)
        return rearrange(self.to_qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)

    def attend(self, q, k, v, past: int = 0) -> torch.Tensor:
        """q (B,h,n,d); k, v (B,h,past+n,d) without memory; returns (B, n, C)."""
        b = q.shape[0]
        mk, mv = (m.unsqueeze(0).expand(b, -1, -1, -1) for m in self.mem_kv)
        num_mem = mk.shape[2]
        k = torch.cat((mk, k), dim=2)
        v = torch.cat((mv, v), dim=2)
        mask = None
        if self.causal:
            n, total = q.shape[2], k.shape[2]
            qi = torch.arange(n, device=q.device)[:, None] + past + num_mem
            kj = torch.arange(total, device=q.device)[None, :]
            mask = kj <= qi  # memory (kj < num_mem) always visible
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x, cond)
        return self.attend(q, k, v)


def _repeat_cond(cond: torch.Tensor | None, times: int) -> torch.Tensor | None:
    return None if cond is None else cond.repeat_interleave(times, dim=0)


class SpaceAttention(Attention):
    """Attention among the H*W positions of each frame: (B, C, T, H, W) -> same."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = rearrange(x, "b c t h w -> (b t) (h w) c")
        out = super().forward(seq, _repeat_cond(cond, t))
        return rearrange(out, "(b t) (h w) c -> b c t h w", b=b, h=h)


class TimeAttention(Attention, StreamingModule):
    """Causal attention along time at each spatial position: (B, C, T, H, W) -> same.

    While streaming, keys and values of earlier chunks are cached so chunked == whole.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, causal=True, **kwargs)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = rearrange(x, "b c t h w -> (b h w) t c")
        q, k, v = self.qkv(seq, _repeat_cond(cond, h * w))
        past = 0
        if self._stream is not None:
            if "k" in self._stream:
                past = self._stream["k"].shape[2]
                k = torch.cat((self._stream["k"], k), dim=2)
                v = torch.cat((self._stream["v"], v), dim=2)
                self._stream["k"], self._stream["v"] = k, v
            else:  # copies: on the first chunk k and v are views of the whole q/k/v projection
                self._stream["k"], self._stream["v"] = k.clone(), v.clone()
        out = self.attend(q, k, v, past=past)
        return rearrange(out, "(b h w) t c -> b c t h w", b=b, h=h, w=w)


def taylor_feature_map(x: torch.Tensor) -> torch.Tensor:
    """Second-order Taylor features of exp(q.k): [1, x, vec(x x^T) / sqrt(2)], (..., 1+d+d^2)."""
    x2 = torch.einsum("...i,...j->...ij", x, x) * (0.5**0.5)
    return torch.cat((torch.ones_like(x[..., :1]), x, x2.flatten(-2)), dim=-1)


class LinearSpaceAttention(nn.Module):
    """Taylor-series linear attention among the H*W positions of each frame (cost linear in
    H*W): softmax(q.k) is replaced by its second-order expansion 1 + q.k + (q.k)^2 / 2."""

    def __init__(self, dim: int, heads: int = 16, dim_head: int = 8, dim_cond: int | None = None,
                 eps: float = 1e-5):
        super().__init__()
        self.heads, self.scale, self.eps = heads, dim_head**-0.5, eps
        inner = heads * dim_head
        self.norm = _norm(dim, dim_cond)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = self.norm(rearrange(x, "b c t h w -> (b t) (h w) c"), _repeat_cond(cond, t))
        q = rearrange(self.to_q(seq), "b n (h d) -> b h n d", h=self.heads) * self.scale
        k, v = rearrange(self.to_kv(seq), "b n (kv h d) -> kv b h n d", kv=2, h=self.heads)
        q, k = taylor_feature_map(q), taylor_feature_map(k)
        kv = torch.einsum("bhnd,bhne->bhde", k, v)
        denom = torch.einsum("bhnd,bhd->bhn", q, k.sum(dim=2)).clamp(min=self.eps)
        out = torch.einsum("bhnd,bhde->bhne", q, kv) / denom.unsqueeze(-1)
        out = self.to_out(rearrange(out, "b h n d -> b n (h d)"))
        return rearrange(out, "(b t) (h w) c -> b c t h w", b=b, h=h)


class FeedForward(nn.Module):
    """Pointwise GEGLU MLP over channels: (B, C, T, H, W) -> same."""

    def __init__(self, dim: int, mult: float = 4.0, dim_cond: int | None = None):
        super().__init__()
        inner = int(dim * mult * 2 / 3)
        self.norm = _norm(dim, dim_cond, channel_first=True)
        self.proj_in = nn.Conv3d(dim, inner * 2, 1)
        self.proj_out = nn.Conv3d(inner, dim, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x, gate = pointwise_conv3d(self.norm(x, cond), self.proj_in.weight, self.proj_in.bias).chunk(2, dim=1)
        return pointwise_conv3d(F.gelu(gate) * x, self.proj_out.weight, self.proj_out.bias)


class TokenShift(StreamingModule):
    """Shift the second half of the channels one frame forward in time (the first frame gets
    zeros, or the previous chunk's last frame while streaming), then apply ``fn``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        keep, shift = x.chunk(2, dim=1)
        state = self._stream
        prev = state["last"] if state is not None and "last" in state else torch.zeros_like(shift[:, :, :1])
        if state is not None:
            state["last"] = shift[:, :, -1:].clone()  # a copy: a view would keep all of x alive
        shifted = torch.cat((prev, shift[:, :, :-1]), dim=2)
        return self.fn(torch.cat((keep, shifted), dim=1), cond)
