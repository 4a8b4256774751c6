"""The quantizer contract shared by LFQ, FSQ, VQ and the identity quantizer.

    out = q(z)                 # z (B, D, T, H, W) float -> QuantizerOutput
    out.quantized              # (B, D, T, H, W), straight-through gradients to z
    out.codes                  # (B, T, H, W) int64, or (B, T, H, W, num_codebooks) if > 1
    out.aux_loss               # scalar: the quantizer's own training loss (weighted)
    out.metrics                # dict of scalar tensors (utilization, perplexity, loss terms)
    q.codes_from(z)            # codes only, no loss
    q.decode_codes(codes)      # codes -> quantized latents (B, D, T, H, W)
    q.codebook_size            # codes per codebook

Quantizers run in float32 even under autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from einops import rearrange
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor
    codes: torch.Tensor
    aux_loss: torch.Tensor
    metrics: dict = field(default_factory=dict)


def distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def distributed_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` across processes, with gradients flowing to the local ``t`` unchanged.

    Every rank computes its loss from the global mean; DDP then averages the gradients, which
    gives exactly the gradient of the global objective.
    """
    world = distributed_world()
    if world == 1:
        return t
    g = t.detach().clone()
    dist.all_reduce(g)
    return t + (g / world - t.detach())


def code_usage_metrics(codes: torch.Tensor, codebook_size: int) -> dict:
    """Utilisation (share of codes used) and perplexity (exp entropy) of one batch of codes."""
    with torch.no_grad():
        flat = codes.reshape(-1)
        _, counts = torch.unique(flat, return_counts=True)
        p = counts.double() / flat.numel()
        ent = -(p * p.log()).sum()
        return {
            "utilization": torch.tensor(counts.numel() / codebook_size, dtype=torch.float32),
            "perplexity": ent.exp().float(),
        }


class Quantizer(nn.Module):
    """Base class. Subclasses implement ``_quantize`` on channel-last tokens (N, D)."""

    codebook_size: int = 1
    num_codebooks: int = 1

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size) * self.num_codebooks

    # --- helpers for (B, D, T, H, W) <-> (N, D)
    @staticmethod
    def _to_tokens(z: torch.Tensor):
        b, d, t, h, w = z.shape
        return rearrange(z, "b d t h w -> (b t h w) d"), (b, t, h, w)

    def _from_tokens(self, x: torch.Tensor, grid) -> torch.Tensor:
        b, t, h, w = grid
        return rearrange(x, "(b t h w) d -> b d t h w", b=b, t=t, h=h, w=w)

    def _codes_grid(self, codes: torch.Tensor, grid) -> torch.Tensor:
        b, t, h, w = grid
        codes = codes.reshape(b, t, h, w, self.num_codebooks)
        return codes[..., 0] if self.num_codebooks == 1 else codes

    def check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}; "
                             "pass the int64 output of encode()")
        want = 5 if self.num_codebooks > 1 else 4
        if codes.ndim != want:
            shape = "(B, T', H', W', num_codebooks)" if self.num_codebooks > 1 else "(B, T', H', W')"
            raise ValueError(f"codes have shape {tuple(codes.shape)}; expected {shape}. "
                             "Reshape flat codes to the latent grid first")
        if self.num_codebooks > 1 and codes.shape[-1] != self.num_codebooks:
            raise ValueError(f"codes have {codes.shape[-1]} codebooks in the last axis; "
                             f"this quantizer has {self.num_codebooks}")
        if codes.numel():
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= self.codebook_size:
                raise ValueError(f"codes out of range: found values in [{lo}, {hi}], the codebook has "
                                 f"{self.codebook_size} codes (0 .. {self.codebook_size - 1}); "
                                 "were these codes made by a different tokenizer?")
        return codes.long()

    def codes_from(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(z, compute_loss=False).codes
