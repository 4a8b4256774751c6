"""Vector quantization: nearest codebook entry, learned or EMA codebook, commitment loss and
restart of dead codes (entries whose EMA usage falls below ``dead_code_threshold`` are replaced
by random encoder outputs of the current batch; under torch.distributed, rank 0 picks them and
broadcasts so every rank keeps the same codebook)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from magtok.quantizers.base import Quantizer, QuantizerOutput, code_usage_metrics, distributed_world


class VQ(Quantizer):
    """z (B, D, T, H, W) -> QuantizerOutput, codes in [0, codebook_size)."""

    def __init__(self, dim: int, codebook_size: int = 1024, codebook_dim: int = 8,
                 commitment_loss_weight: float = 0.25, ema: bool = True, ema_decay: float = 0.99,
                 dead_code_threshold: float = 1.0, cosine: bool = False, eps: float = 1e-5):
        super().__init__(dim)
        if codebook_size < 2:
            raise ValueError(f"VQ codebook_size must be >= 2, got {codebook_size}")
        self.codebook_size, self.codebook_dim = codebook_size, codebook_dim
        self.commitment_loss_weight = commitment_loss_weight
        self.ema, self.ema_decay, self.eps = ema, ema_decay, eps
        self.dead_code_threshold, self.cosine = dead_code_threshold, cosine
        self.project_in = nn.Linear(dim, codebook_dim) if dim != codebook_dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if dim != codebook_dim else nn.Identity()
        embed = torch.randn(codebook_size, codebook_dim)
        if ema:
            self.register_buffer("embed", embed)
            self.register_buffer("embed_avg", embed.clone())
        else:
            self.embed = nn.Parameter(embed)
        self.register_buffer("cluster_size", torch.ones(codebook_size))

    def _codebook(self) -> torch.Tensor:
        return F.normalize(self.embed, dim=-1) if self.cosine else self.embed

    def _nearest(self, x: torch.Tensor) -> torch.Tensor:
        e = self._codebook()
        out = []
        for chunk in x.split(8192):
            d = chunk.pow(2).sum(-1, keepdim=True) - 2 * chunk @ e.t() + e.pow(2).sum(-1)
            out.append(d.argmin(-1))
        return torch.cat(out)

    def forward(self, z: torch.Tensor, compute_loss: bool = True) -> QuantizerOutput:
        with torch.autocast(z.device.type, enabled=False):
            tokens, grid = self._to_tokens(z.float())
            x = self.project_in(tokens)
            if self.cosine:
                x = F.normalize(x, dim=-1)
            codes = self._nearest(x.detach())
            q = self._codebook()[codes]
            aux = x.new_zeros(())
            metrics = {}
            if compute_loss:
                commit = F.mse_loss(x, q.detach())
                aux = self.commitment_loss_weight * commit
                if not self.ema:
                    aux = aux + F.mse_loss(q, x.detach())
                metrics = {"commitment": commit.detach(), **code_usage_metrics(codes, self.codebook_size)}
            if self.training and compute_loss:
                self._update(x.detach(), codes)
            st = x + (q - x).detach()
            out = self.project_out(st)
        return QuantizerOutput(self._from_tokens(out, grid), self._codes_grid(codes[:, None], grid),
                               aux, metrics)

    @torch.no_grad()
    def _update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed).index_add_(0, codes, x)
        if distributed_world() > 1:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        if self.ema:
            self.embed_avg.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
            self.embed.copy_(self.embed_avg / smoothed[:, None])
        dead = self.cluster_size < self.dead_code_threshold
        if dead.any():
            idx = torch.randint(0, x.shape[0], (int(dead.sum()),), device=x.device)
            new = x[idx]
            if distributed_world() > 1:
                dist.broadcast(new, src=0)
            embed = self.embed.data if isinstance(self.embed, nn.Parameter) else self.embed
            embed[dead] = new
            if self.ema:
                self.embed_avg[dead] = new
            self.cluster_size[dead] = 1.0

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self.check_codes(codes)
        grid = codes.shape[:4]
        q = self._codebook()[codes.reshape(-1)]
        return self._from_tokens(self.project_out(q), grid)
