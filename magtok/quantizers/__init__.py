"""Quantizers sharing one contract (see :mod:`magtok.quantizers.base`) and their builder."""

from __future__ import annotations

from magtok.configs import QuantizerConfig
from magtok.quantizers.base import Quantizer, QuantizerOutput
from magtok.quantizers.fsq import FSQ
from magtok.quantizers.identity import IdentityQuantizer
from magtok.quantizers.lfq import LFQ
from magtok.quantizers.vq import VQ


def _lfq(dim: int, c: QuantizerConfig) -> Quantizer:
    return LFQ(dim, c.codebook_size, c.num_codebooks, c.entropy_loss_weight, c.commitment_loss_weight,
               c.diversity_gamma, c.inv_temperature, c.soft_clamp_input_value, c.spherical,
               c.codebook_entropy, c.entropy_group_bits, c.entropy_chunk_codes)


def _fsq(dim: int, c: QuantizerConfig) -> Quantizer:
    return FSQ(dim, c.levels, c.num_codebooks)


def _vq(dim: int, c: QuantizerConfig) -> Quantizer:
    if c.num_codebooks != 1:
        raise ValueError("VQ supports num_codebooks=1 only")
    return VQ(dim, c.codebook_size, c.codebook_dim, c.commitment_loss_weight, c.ema, c.ema_decay,
              c.dead_code_threshold, c.cosine)


def _identity(dim: int, c: QuantizerConfig) -> Quantizer:
    return IdentityQuantizer(dim)


QUANTIZER_BUILDERS = {"lfq": _lfq, "fsq": _fsq, "vq": _vq, "identity": _identity}


def build_quantizer(dim: int, cfg: QuantizerConfig) -> Quantizer:
    """Build the quantizer described by ``cfg`` for latents of ``dim`` channels."""
    if cfg.kind not in QUANTIZER_BUILDERS:
        raise ValueError(f"unknown quantizer kind {cfg.kind!r}; known kinds: {sorted(QUANTIZER_BUILDERS)}")
    return QUANTIZER_BUILDERS[cfg.kind](dim, cfg)


__all__ = ["FSQ", "IdentityQuantizer", "LFQ", "QUANTIZER_BUILDERS", "Quantizer", "QuantizerOutput",
           "VQ", "build_quantizer"]
