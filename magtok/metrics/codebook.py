"""Codebook usage over a data set, bits per token and compression ratio."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["CodebookStats", "CodebookUsage", "codebook_usage", "bits_per_token", "compression_ratio"]


@dataclass(frozen=True)
class CodebookStats:
    """Usage of a codebook over all tokens seen.

    utilization: share of the codebook used at least once, in [0, 1].
    perplexity: ``exp(H)`` with H the entropy (nats) of the code histogram; in [1, codebook_size],
        equal to the number of used codes when they are used equally often.
    entropy_bits: H in bits, in [0, log2(codebook_size)].
    """

    codebook_size: int
    tokens: int
    used: int
    utilization: float
    perplexity: float
    entropy_bits: float


class CodebookUsage:
    """Incremental code histogram: ``update(codes)`` per batch, ``compute()`` at the end.

    Args:
        codebook_size: number of codes K; codes must be integers in [0, K).

    ``counts`` (int64, (K,), on the CPU) is public so that processes can sum it (e.g. with
    ``torch.distributed.all_reduce``) before ``compute()``: take the entropy of the global
    histogram, not the mean of per-process entropies.
    """

    def __init__(self, codebook_size: int):
        if int(codebook_size) < 1:
            raise ValueError(f"codebook_size must be >= 1; got {codebook_size}")
        self.codebook_size = int(codebook_size)
        self.counts = torch.zeros(self.codebook_size, dtype=torch.int64)

    def update(self, codes: torch.Tensor) -> None:
        """Count ``codes``: an integer tensor of any shape, e.g. (B, T', H', W')."""
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex() \
                or codes.dtype == torch.bool:
            kind = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be an integer tensor (e.g. int64 from tokenizer.encode); got {kind}")
        flat = codes.reshape(-1).long()
        if flat.numel() == 0:
            return
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}); got values in [{lo}, {hi}]. "
                             f"Is codebook_size right?")
        self.counts += torch.bincount(flat, minlength=self.codebook_size).cpu()

    def merge(self, other: "CodebookUsage") -> None:
        """Add the counts of another accumulator of the same codebook size."""
        if other.codebook_size != self.codebook_size:
            raise ValueError(f"cannot merge codebook sizes {other.codebook_size} and {self.codebook_size}")
        self.counts += other.counts

    def reset(self) -> None:
        self.counts.zero_()

    def compute(self) -> CodebookStats:
        tokens = int(self.counts.sum())
        if tokens == 0:
            raise ValueError("CodebookUsage.compute: no codes counted yet; call update(codes) first")
        used = int((self.counts > 0).sum())
        p = self.counts[self.counts > 0].double() / tokens
        entropy = float(-(p * p.log()).sum())  # nats
        return CodebookStats(codebook_size=self.codebook_size, tokens=tokens, used=used,
                             utilization=used / self.codebook_size, perplexity=math.exp(entropy),
                             entropy_bits=entropy / math.log(2))


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> CodebookStats:
    """One-shot :class:`CodebookUsage` of a single tensor of codes."""
    acc = CodebookUsage(codebook_size)
    acc.update(codes)
    return acc.compute()


def bits_per_token(codebook_size: int) -> float:
    """``log2(codebook_size)``: bits to store one token of a K-entry codebook (18.0 for 2^18)."""
    if int(codebook_size) < 1:
        raise ValueError(f"codebook_size must be >= 1; got {codebook_size}")
    return math.log2(int(codebook_size))


def compression_ratio(video_shape: Sequence[int], code_shape: Sequence[int], codebook_size: int) -> float:
    """Bits of the raw 8-bit video divided by bits of its tokens.

    ``(T * H * W * C * 8) / (T' * H' * W' * log2(K))``.

    Args:
        video_shape: (T, H, W) (C = 3 assumed), (C, T, H, W) or (B, C, T, H, W), e.g. ``video.shape``.
        code_shape: (T', H', W') or (B, T', H', W'), e.g. ``codes.shape``.
        codebook_size: K.

    Example: 17x128x128 RGB -> 5x16x16 codes of 2^18: 17*128*128*3*8 / (5*16*16*18) = 290.1.
    A batch dimension given on both sides must agree; it cancels.
    """
    video_shape, code_shape = tuple(int(s) for s in video_shape), tuple(int(s) for s in code_shape)
    if len(video_shape) not in (3, 4, 5):
        raise ValueError(f"video_shape must be (T, H, W), (C, T, H, W) or (B, C, T, H, W); got {video_shape}")
    if len(code_shape) not in (3, 4):
        raise ValueError(f"code_shape must be (T', H', W') or (B, T', H', W'); got {code_shape}")
    if len(video_shape) == 5 and len(code_shape) == 4 and video_shape[0] != code_shape[0]:
        raise ValueError(f"batch sizes differ: video {video_shape[0]}, codes {code_shape[0]}")
    t, h, w = video_shape[-3:]
    c = video_shape[-4] if len(video_shape) >= 4 else 3
    tc, hc, wc = code_shape[-3:]
    if min(t, h, w, c, tc, hc, wc) < 1:
        raise ValueError(f"shapes must be positive; got video {video_shape}, codes {code_shape}")
    bits = bits_per_token(codebook_size)
    if bits == 0:
        raise ValueError("a codebook of size 1 carries no information (0 bits per token)")
    return (t * h * w * c * 8) / (tc * hc * wc * bits)
