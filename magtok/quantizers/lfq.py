"""Lookup-free quantization (MagViT2, arXiv 2310.05737), scalable to 2^18 codes and beyond.

Each latent channel becomes one bit: q_i = +s if z_i > 0 else -s (s = 1, or 1/sqrt(d) for the
spherical variant). A token of d channels is one of 2^d codes; code = sum_i bit_i * 2^(d-1-i)
(channel 0 is the most significant bit, as in vector-quantize-pytorch).

Entropy loss, without the tokens x 2^d matrix
---------------------------------------------
The original loss takes a softmax over all 2^d codes of the logit 2*tau*<z, c>. Because
<z, c> = sum_i z_i c_i, that softmax is exactly a product of independent per-bit Bernoullis with
logit l_i = 4*tau*s*z_i. Hence:

* per-sample entropy = sum_i H(sigmoid(l_i)), exact, O(N d) memory.
* codebook entropy H(mean_n p(c | n)) does not factorise (the mean mixes tokens). Two options:

  - ``"bit_groups"`` (default): split the d bits into groups of at most ``group_bits`` bits and
    sum the exact entropies of each group's marginal code distribution. Memory O(N 2^g).
    By subadditivity this is an upper bound of the joint entropy, equal to it when the groups
    are independent under the batch distribution, and exactly the joint entropy when
    d <= group_bits.
  - ``"exact"``: the joint entropy over all 2^d codes, computed in chunks of codes with a
    hand-written backward that recomputes each chunk. Memory O(N * chunk + 2^d); time O(N 2^d d).

Under torch.distributed (in training mode) the code distribution is averaged across processes
before its entropy is taken. Everything runs in float32, even under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from magtok.quantizers.base import (Quantizer, QuantizerOutput, code_usage_metrics, distributed_mean,
                                    distributed_world)
import torch.distributed as dist


def _bits_table(start: int, end: int, bits: int, like: torch.Tensor) -> torch.Tensor:
    """(end - start, bits) 0/1 table of codes start..end-1, most significant bit first."""
    codes = torch.arange(start, end, device=like.device)
    shifts = torch.arange(bits - 1, -1, -1, device=like.device)
    return ((codes[:, None] >> shifts) & 1).to(like.dtype)


def binary_entropy_from_logits(l: torch.Tensor) -> torch.Tensor:
    """H(Bernoulli(sigmoid(l))) in nats, stable for large |l|."""
    p = torch.sigmoid(l)
    return p * F.softplus(-l) + (1 - p) * F.softplus(l)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def group_sizes(bits: int, group_bits: int) -> list[int]:
    """Split ``bits`` into ceil(bits / group_bits) groups of near-equal size."""
    n = max(1, math.ceil(bits / group_bits))
    base, extra = divmod(bits, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def bit_group_codebook_entropy(logits: torch.Tensor, group_bits: int, sync: bool = True) -> torch.Tensor:
    """logits (N, C, d) per-bit logits -> (C,) sum over bit groups of the entropy of the
    batch-averaged group code distribution (averaged across processes if ``sync``)."""
    logp1, logp0 = F.logsigmoid(logits), F.logsigmoid(-logits)
    total = logits.new_zeros(logits.shape[1])
    start = 0
    for g in group_sizes(logits.shape[-1], group_bits):
        table = _bits_table(0, 2**g, g, logits)  # (2^g, g)
        lp1, lp0 = logp1[..., start:start + g], logp0[..., start:start + g]
        log_probs = lp0.sum(-1, keepdim=True) + (lp1 - lp0) @ table.t()  # (N, C, 2^g)
        avg = log_probs.exp().mean(0)  # (C, 2^g)
        avg = distributed_mean(avg) if sync else avg
        total = total + _entropy(avg)
        start += g
    return total


class _ExactCodebookEntropy(torch.autograd.Function):
    """H(mean_n prod_i Bernoulli(sigmoid(l_ni))) over all 2^d codes, chunked over codes."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, chunk: int, sync: bool):  # logits (N, d)
        n, d = logits.shape
        base = F.logsigmoid(-logits).sum(-1, keepdim=True)
        delta = F.logsigmoid(logits) - F.logsigmoid(-logits)
        avg = logits.new_empty(2**d)
        for s in range(0, 2**d, chunk):
            e = min(2**d, s + chunk)
            avg[s:e] = (base + delta @ _bits_table(s, e, d, logits).t()).exp().mean(0)
        if sync and distributed_world() > 1:
            dist.all_reduce(avg)
            avg /= distributed_world()
        ctx.save_for_backward(logits, avg)
        ctx.chunk = chunk
        return _entropy(avg)

    @staticmethod
    def backward(ctx, grad_h):
        logits, avg = ctx.saved_tensors
        n, d = logits.shape
        g = -(avg.clamp_min(1e-12).log() + 1)  # dH/davg
        base = F.logsigmoid(-logits).sum(-1, keepdim=True)
        delta = F.logsigmoid(logits) - F.logsigmoid(-logits)
        acc_bits = torch.zeros_like(logits)
        acc = logits.new_zeros(n, 1)
        for s in range(0, 2**d, ctx.chunk):
            e = min(2**d, s + ctx.chunk)
            table = _bits_table(s, e, d, logits)
            weighted = (base + delta @ table.t()).exp() * g[s:e]  # (N, m)
            acc_bits += weighted @ table
            acc += weighted.sum(-1, keepdim=True)
        # d p(c|n) / d l_ni = p(c|n) (b_i(c) - sigmoid(l_ni))
        grad = (acc_bits - torch.sigmoid(logits) * acc) / n
        return grad * grad_h, None, None


def exact_codebook_entropy(logits: torch.Tensor, chunk: int = 4096, sync: bool = True) -> torch.Tensor:
    """logits (N, C, d) -> (C,) exact codebook entropies, memory O(N * chunk)."""
    return torch.stack([_ExactCodebookEntropy.apply(logits[:, c].contiguous(), chunk, sync)
                        for c in range(logits.shape[1])])


class LFQ(Quantizer):
    """Lookup-free quantizer. z (B, D, T, H, W) -> QuantizerOutput; codes (B, T, H, W) in
    [0, codebook_size). A linear projection maps D <-> log2(codebook_size) * num_codebooks
    channels when they differ.

    aux_loss = entropy_loss_weight * (per_sample_entropy - diversity_gamma * codebook_entropy)
               + commitment_loss_weight * ||z - sg(q)||^2
    """

    def __init__(self, dim: int, codebook_size: int, num_codebooks: int = 1,
                 entropy_loss_weight: float = 0.1, commitment_loss_weight: float = 0.25,
                 diversity_gamma: float = 1.0, inv_temperature: float = 100.0,
                 soft_clamp_input_value: float | None = 10.0, spherical: bool = False,
                 codebook_entropy: str = "bit_groups", entropy_group_bits: int = 10,
                 entropy_chunk_codes: int = 4096):
        super().__init__(dim)
        bits = math.log2(codebook_size)
        if codebook_size < 2 or not bits.is_integer():
            raise ValueError(f"LFQ codebook_size must be a power of two >= 2, got {codebook_size} "
                             f"(nearest: {2 ** max(1, round(bits))})")
        if codebook_entropy not in ("bit_groups", "exact"):
            raise ValueError(f"codebook_entropy must be 'bit_groups' or 'exact', got {codebook_entropy!r}")
        self.bits, self.codebook_size, self.num_codebooks = int(bits), codebook_size, num_codebooks
        code_dims = self.bits * num_codebooks
        self.project_in = nn.Linear(dim, code_dims) if dim != code_dims else nn.Identity()
        self.project_out = nn.Linear(code_dims, dim) if dim != code_dims else nn.Identity()
        self.entropy_loss_weight = entropy_loss_weight
        self.commitment_loss_weight = commitment_loss_weight
        self.diversity_gamma = diversity_gamma
        self.inv_temperature = inv_temperature
        self.soft_clamp_input_value = soft_clamp_input_value
        self.spherical = spherical
        self.codebook_entropy = codebook_entropy
        self.entropy_group_bits = entropy_group_bits
        self.entropy_chunk_codes = entropy_chunk_codes
        self.register_buffer("bit_weights", 2 ** torch.arange(self.bits - 1, -1, -1), persistent=False)

    @property
    def code_scale(self) -> float:
        return self.bits**-0.5 if self.spherical else 1.0

    def forward(self, z: torch.Tensor, compute_loss: bool = True) -> QuantizerOutput:
        with torch.autocast(z.device.type, enabled=False):
            tokens, grid = self._to_tokens(z.float())
            x = self.project_in(tokens)
            if self.soft_clamp_input_value is not None:
                c = self.soft_clamp_input_value
                x = torch.tanh(x / c) * c
            x = x.view(x.shape[0], self.num_codebooks, self.bits)  # (N, C, d)
            if self.spherical:
                x = F.normalize(x, dim=-1)
            s = self.code_scale
            q = torch.where(x > 0, s, -s).to(x.dtype)
            codes = ((x > 0).long() * self.bit_weights).sum(-1)  # (N, C)
            st = x + (q - x).detach()
            out = self.project_out(st.reshape(st.shape[0], -1))
            aux = x.new_zeros(())
            metrics = {}
            if compute_loss:
                logits = 4 * self.inv_temperature * s * x
                per_sample = binary_entropy_from_logits(logits).sum(-1).mean()
                # the code distribution is averaged across processes in training only (validation
                # may run on one process)
                if self.codebook_entropy == "exact":
                    cb = exact_codebook_entropy(logits, self.entropy_chunk_codes, self.training).mean()
                else:
                    cb = bit_group_codebook_entropy(logits, self.entropy_group_bits, self.training).mean()
                commit = F.mse_loss(x, q.detach())
                aux = (self.entropy_loss_weight * (per_sample - self.diversity_gamma * cb)
                       + self.commitment_loss_weight * commit)
                metrics = {"per_sample_entropy": per_sample.detach(), "codebook_entropy": cb.detach(),
                           "commitment": commit.detach(), **code_usage_metrics(codes, self.codebook_size)}
        return QuantizerOutput(self._from_tokens(out, grid), self._codes_grid(codes, grid), aux, metrics)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self.check_codes(codes)
        grid = codes.shape[:4]
        flat = codes.reshape(-1, self.num_codebooks)
        bits = (flat[..., None] & self.bit_weights) != 0  # (N, C, d)
        s = self.code_scale
        q = torch.where(bits, s, -s).float().reshape(flat.shape[0], -1)
        return self._from_tokens(self.project_out(q), grid)
